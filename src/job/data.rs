//! The data of a job: seeded disjoint calibration and validation subsets, the training samples
//! (all but the validation subset) when fine-tuning follows, the runtime that runs them, and
//! what is computed once from the original model (its outputs on the validation subset, its
//! burn network as the distillation teacher).

use super::{usage, Length, Options, Progress};
use crate::data::{self, Dataset};
use crate::error::Result;
use crate::eval::{self, runtime};
use crate::search::datafree::Pruner;
use std::cell::OnceCell;
use std::path::Path;

pub struct DataCtx {
    pub calib: Dataset,
    pub val: Dataset,
    pub kind: runtime::Kind,
    pub chw: (usize, usize, usize),
    /// With fine-tuning (or `recover_ft_steps`): every sample not in `val`.
    pub train: Option<Dataset>,
    /// The original model's outputs on `val` (computed once, for re-ranking and the report).
    original: OnceCell<(Vec<f32>, usize)>,
    /// The original model as a burn network: the distillation teacher (search candidates and
    /// recovered plans share it).
    teacher: OnceCell<crate::net::Net>,
}

impl DataCtx {
    /// The original model's outputs on the validation subset, and outputs per sample.
    pub fn original_logits(&self, p: &Pruner) -> Result<&(Vec<f32>, usize)> {
        if self.original.get().is_none() {
            let tmp = eval::TempDir::new("original")?;
            let l = runtime::logits(self.kind, &p.model, &tmp, "original.onnx", &self.val)?;
            let _ = self.original.set(l);
        }
        Ok(self.original.get().expect("set above"))
    }

    /// The original model as a burn network on the inference device, built once.
    pub fn teacher(&self, p: &Pruner) -> Result<&crate::net::Net> {
        if self.teacher.get().is_none() {
            let dev = crate::net::infer_device().0;
            let _ = self.teacher.set(crate::net::Net::new(&p.model, &dev)?);
        }
        Ok(self.teacher.get().expect("set above"))
    }

    /// Loads `data` for `p`'s model and splits it as `o` says.
    pub fn load(p: &Pruner, data: &Path, o: &Options, out: &dyn Progress) -> Result<DataCtx> {
        let shapes = eval::input_shapes(&p.model, &p.shapes)?;
        let chw = match shapes.first().map(|s| s.as_slice()) {
            Some([_, c, h, w]) => (*c, *h, *w),
            _ => {
                return Err(usage(
                    "--data needs an image model with one input [N,C,H,W]",
                ))
            }
        };
        let ds = data::load(data, chw, &o.data_options)?;
        let (mut calib_n, mut val_n) = (o.calib_size, o.val_size);
        if calib_n + val_n > ds.n {
            // Small data: split what there is, calibration first.
            calib_n = calib_n.min(ds.n.div_ceil(2));
            val_n = val_n.min(ds.n - calib_n);
            out.line(&format!(
                "note: {} has {} samples: using {calib_n} for calibration and {val_n} for validation",
                data.display(),
                ds.n
            ));
        }
        let (ci, vi) = data::split(ds.n, o.seed, calib_n, val_n)?;
        let (kind, line) = runtime::choose(&o.runtime)?;
        out.line(&line);
        // Training samples (all but the validation subset) for fine-tuning and
        // `recover_ft_steps`.
        let train = (o.length() != Length::Off || o.recover_ft_steps > 0 || o.joint.is_some())
            .then(|| ds.subset(&data::complement(ds.n, &vi)));
        Ok(DataCtx {
            calib: ds.subset(&ci),
            val: ds.subset(&vi),
            kind,
            chw,
            train,
            original: Default::default(),
            teacher: Default::default(),
        })
    }
}
