//! Device tensors ([`Dt`], rank ≤ 6 with leading ones) and the values of a forward pass.

use super::*;

pub const MAX_RANK: usize = 6;

/// A device tensor of logical rank `rank` (see the module invariants).
#[derive(Clone, Debug)]
pub struct Dt {
    pub t: Tensor<6>,
    pub rank: usize,
}

fn pad6(dims: &[usize]) -> [usize; 6] {
    let mut s = [1usize; 6];
    s[6 - dims.len()..].copy_from_slice(dims);
    s
}

impl Dt {
    pub fn new(t: Tensor<6>, rank: usize) -> Dt {
        Dt { t, rank }
    }
    pub fn from_vec(data: Vec<f32>, dims: &[usize], device: &Device) -> Dt {
        let t = Tensor::<6>::from_data(TensorData::new(data, pad6(dims)), device);
        Dt::new(t, dims.len())
    }
    pub fn dims(&self) -> Vec<usize> {
        self.t.dims()[6 - self.rank..].to_vec()
    }
    /// Physical axis of logical axis `a`.
    pub fn ax(&self, a: usize) -> usize {
        6 - self.rank + a
    }
    pub fn reshape(self, dims: &[usize]) -> ops::OpResult<Dt> {
        if dims.len() > MAX_RANK {
            return Err(format!(
                "rank {} is above the supported {MAX_RANK}",
                dims.len()
            ));
        }
        let n: usize = dims.iter().product();
        let m: usize = self.dims().iter().product();
        if n != m {
            return Err(format!(
                "cannot reshape {:?} ({m} elements) to {dims:?}",
                self.dims()
            ));
        }
        Ok(Dt::new(self.t.reshape(pad6(dims)), dims.len()))
    }
    /// The value as a rank-`r` view with leading ones (r ≥ rank): numpy's implicit expansion.
    pub fn lift(self, r: usize) -> Dt {
        Dt::new(self.t, r.max(self.rank))
    }
    pub fn to4(self) -> ops::OpResult<Tensor<4>> {
        if self.rank != 4 {
            return Err(format!("expected a rank-4 tensor, got {:?}", self.dims()));
        }
        let d = self.dims();
        Ok(self.t.reshape([d[0], d[1], d[2], d[3]]))
    }
    pub fn from4(t: Tensor<4>) -> Dt {
        let d = t.dims();
        Dt::new(t.reshape(pad6(&d)), 4)
    }
    pub fn to2(self) -> ops::OpResult<Tensor<2>> {
        if self.rank != 2 {
            return Err(format!("expected a rank-2 tensor, got {:?}", self.dims()));
        }
        let d = self.dims();
        Ok(self.t.reshape([d[0], d[1]]))
    }
    pub fn from2(t: Tensor<2>) -> Dt {
        let d = t.dims();
        Dt::new(t.reshape(pad6(&d)), 2)
    }
    pub fn to1(self) -> ops::OpResult<Tensor<1>> {
        let n: usize = self.dims().iter().product();
        if self.dims().iter().filter(|&&d| d != 1).count() > 1 {
            return Err(format!("expected a vector, got {:?}", self.dims()));
        }
        Ok(self.t.reshape([n]))
    }
    pub fn to_vec(&self) -> Vec<f32> {
        self.t
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    }
}

/// A value during the forward pass.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // device tensors are the common case; boxing them costs more
pub enum Val {
    /// On the device (float).
    F(Dt),
    /// On the host: a constant or something computed from shapes.
    H(Arc<IrTensor>),
}

/// Uploads a host float tensor.
pub fn host_to_dt(t: &IrTensor, device: &Device) -> ops::OpResult<Dt> {
    if t.dims.len() > MAX_RANK {
        return Err(format!(
            "rank {} is above the supported {MAX_RANK}",
            t.dims.len()
        ));
    }
    let v = t
        .to_arr()
        .and_then(|a| a.to_f32_vec())
        .ok_or_else(|| format!("a {} constant cannot be used as floats", t.dtype.name()))?;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    Ok(Dt::from_vec(v, &dims, device))
}
