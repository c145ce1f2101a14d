//! Typed n-d arrays used for constant evaluation (folding) and weight arithmetic.

use super::tensor::{DataType, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};

#[derive(Clone, Debug, PartialEq)]
pub enum Arr {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    Bool(ArrayD<bool>),
}

/// Applies `$body` to the inner array whatever its element type, binding it as `$a`.
#[macro_export]
macro_rules! arr_map {
    ($x:expr, $a:ident => $body:expr) => {
        match $x {
            $crate::ir::Arr::F32($a) => $crate::ir::Arr::F32($body),
            $crate::ir::Arr::F64($a) => $crate::ir::Arr::F64($body),
            $crate::ir::Arr::I64($a) => $crate::ir::Arr::I64($body),
            $crate::ir::Arr::I32($a) => $crate::ir::Arr::I32($body),
            $crate::ir::Arr::I8($a) => $crate::ir::Arr::I8($body),
            $crate::ir::Arr::U8($a) => $crate::ir::Arr::U8($body),
            $crate::ir::Arr::Bool($a) => $crate::ir::Arr::Bool($body),
        }
    };
}

/// Like [`arr_map!`] but `$body` returns `Option<ArrayD<_>>`.
#[macro_export]
macro_rules! arr_try_map {
    ($x:expr, $a:ident => $body:expr) => {
        match $x {
            $crate::ir::Arr::F32($a) => $body.map($crate::ir::Arr::F32),
            $crate::ir::Arr::F64($a) => $body.map($crate::ir::Arr::F64),
            $crate::ir::Arr::I64($a) => $body.map($crate::ir::Arr::I64),
            $crate::ir::Arr::I32($a) => $body.map($crate::ir::Arr::I32),
            $crate::ir::Arr::I8($a) => $body.map($crate::ir::Arr::I8),
            $crate::ir::Arr::U8($a) => $body.map($crate::ir::Arr::U8),
            $crate::ir::Arr::Bool($a) => $body.map($crate::ir::Arr::Bool),
        }
    };
}

fn shape_of(dims: &[i64]) -> Option<Vec<usize>> {
    dims.iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()
}

macro_rules! decode {
    ($raw:expr, $shape:expr, $t:ty, $n:expr) => {{
        let v: Vec<$t> = $raw
            .chunks_exact($n)
            .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ArrayD::from_shape_vec(IxDyn(&$shape), v).ok()?
    }};
}

impl Arr {
    pub fn from_raw(dtype: DataType, dims: &[i64], raw: &[u8]) -> Option<Arr> {
        let shape = shape_of(dims)?;
        let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if raw.len() != n.checked_mul(dtype.byte_size()?)? {
            return None;
        }
        Some(match dtype {
            DataType::FLOAT => Arr::F32(decode!(raw, shape, f32, 4)),
            DataType::DOUBLE => Arr::F64(decode!(raw, shape, f64, 8)),
            DataType::INT64 => Arr::I64(decode!(raw, shape, i64, 8)),
            DataType::INT32 => Arr::I32(decode!(raw, shape, i32, 4)),
            DataType::INT8 => Arr::I8(decode!(raw, shape, i8, 1)),
            DataType::UINT8 => Arr::U8(decode!(raw, shape, u8, 1)),
            DataType::BOOL => Arr::Bool(
                ArrayD::from_shape_vec(IxDyn(&shape), raw.iter().map(|&b| b != 0).collect())
                    .ok()?,
            ),
            _ => return None,
        })
    }

    pub fn dtype(&self) -> DataType {
        match self {
            Arr::F32(_) => DataType::FLOAT,
            Arr::F64(_) => DataType::DOUBLE,
            Arr::I64(_) => DataType::INT64,
            Arr::I32(_) => DataType::INT32,
            Arr::I8(_) => DataType::INT8,
            Arr::U8(_) => DataType::UINT8,
            Arr::Bool(_) => DataType::BOOL,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Arr::F32(a) => a.shape(),
            Arr::F64(a) => a.shape(),
            Arr::I64(a) => a.shape(),
            Arr::I32(a) => a.shape(),
            Arr::I8(a) => a.shape(),
            Arr::U8(a) => a.shape(),
            Arr::Bool(a) => a.shape(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_tensor(&self) -> Tensor {
        let dims: Vec<i64> = self.shape().iter().map(|&d| d as i64).collect();
        let mut b: Vec<u8> = Vec::new();
        match self {
            Arr::F32(a) => a.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            Arr::F64(a) => a.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            Arr::I64(a) => a.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            Arr::I32(a) => a.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            Arr::I8(a) => a.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            Arr::U8(a) => b.extend(a.iter().copied()),
            Arr::Bool(a) => b.extend(a.iter().map(|&x| x as u8)),
        }
        Tensor {
            dtype: self.dtype(),
            dims,
            data: TensorData::Raw(b.into()),
        }
    }

    /// Integer view (ints and bools); `None` for floats.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            Arr::I64(a) => a.iter().copied().collect(),
            Arr::I32(a) => a.iter().map(|&x| x as i64).collect(),
            Arr::I8(a) => a.iter().map(|&x| x as i64).collect(),
            Arr::U8(a) => a.iter().map(|&x| x as i64).collect(),
            Arr::Bool(a) => a.iter().map(|&x| x as i64).collect(),
            _ => return None,
        })
    }

    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        Some(match self {
            Arr::F32(a) => a.iter().copied().collect(),
            Arr::F64(a) => a.iter().map(|&x| x as f32).collect(),
            _ => return None,
        })
    }

    /// ONNX `Cast` semantics for the supported types.
    pub fn cast(&self, to: DataType) -> Option<Arr> {
        macro_rules! conv {
            ($a:expr) => {
                match to {
                    DataType::FLOAT => Arr::F32($a.mapv(|x| x as f32)),
                    DataType::DOUBLE => Arr::F64($a.mapv(|x| x as f64)),
                    DataType::INT64 => Arr::I64($a.mapv(|x| x as i64)),
                    DataType::INT32 => Arr::I32($a.mapv(|x| x as i32)),
                    DataType::INT8 => Arr::I8($a.mapv(|x| x as i8)),
                    DataType::UINT8 => Arr::U8($a.mapv(|x| x as u8)),
                    DataType::BOOL => Arr::Bool($a.mapv(|x| x as f64 != 0.0)),
                    _ => return None,
                }
            };
        }
        Some(match self {
            Arr::F32(a) => conv!(a),
            Arr::F64(a) => conv!(a),
            Arr::I64(a) => conv!(a),
            Arr::I32(a) => conv!(a),
            Arr::I8(a) => conv!(a),
            Arr::U8(a) => conv!(a),
            Arr::Bool(a) => conv!(a.mapv(|x| x as u8)),
        })
    }
}
