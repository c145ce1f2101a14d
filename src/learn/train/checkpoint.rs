//! The optimiser state on disk ([`Trainer::save_state`], [`Trainer::load_state`]) and where a
//! run keeps its checkpoint.

use super::*;

impl Trainer {
    /// Writes the optimiser state and step (the weights go into the checkpoint model).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(b"OPFT1\0");
        b.extend_from_slice(&(self.step as u64).to_le_bytes());
        b.push(self.o.optim.code());
        b.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        for s in &self.state {
            for t in s {
                let v: Vec<f32> = t
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .unwrap_or_default();
                b.extend_from_slice(&(v.len() as u64).to_le_bytes());
                for x in v {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        crate::onnx::write_atomic(path, &b)
    }

    /// Restores what [`Trainer::save_state`] wrote (for the same model and optimiser).
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: &str| Error::bad_file(path, format!("not a matching checkpoint: {m}"));
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b.get(pos..pos + n).ok_or_else(|| bad("truncated"))?;
            pos += n;
            Ok(s)
        };
        if take(6)? != b"OPFT1\0" {
            return Err(bad("bad magic"));
        }
        let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap()) as usize;
        let step = u64_at(take(8)?);
        if take(1)?[0] != self.o.optim.code() {
            return Err(bad("another optimiser"));
        }
        if u64_at(take(8)?) != self.state.len() {
            return Err(bad("another parameter count"));
        }
        let mut new_state = Vec::new();
        for s in &self.state {
            let mut ts = Vec::new();
            for t in s {
                let dims = t.dims();
                let n = u64_at(take(8)?);
                if n != dims.iter().product::<usize>() {
                    return Err(bad("another parameter shape"));
                }
                let raw = take(4 * n)?;
                let v: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                ts.push(Tensor::<6>::from_data(
                    TensorData::new(v, dims),
                    &t.device(),
                ));
            }
            new_state.push(ts);
        }
        self.state = new_state;
        self.step = step;
        Ok(())
    }
}

/// Where a run keeps its checkpoint: the model with the current weights (a valid ONNX file)
/// and the optimiser state beside it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub model: std::path::PathBuf,
    pub state: std::path::PathBuf,
}

impl Checkpoint {
    /// `OUT.ckpt.onnx` and `OUT.ckpt.state` beside `out`.
    pub fn beside(out: &Path) -> Checkpoint {
        let mut m = out.as_os_str().to_owned();
        m.push(".ckpt.onnx");
        let mut s = out.as_os_str().to_owned();
        s.push(".ckpt.state");
        Checkpoint {
            model: m.into(),
            state: s.into(),
        }
    }
    pub fn exists(&self) -> bool {
        self.model.exists() && self.state.exists()
    }
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.model);
        let _ = std::fs::remove_file(&self.state);
    }
    pub(super) fn save(&self, net: &Net, tr: &Trainer) -> Result<()> {
        // State first: a model without its state is never taken for a resumable checkpoint.
        tr.save_state(&self.state)?;
        crate::onnx::save(
            &net.write_back(),
            &self.model,
            &crate::onnx::SaveOptions::default(),
            &[],
        )
    }
}
