//! burn as an inference runtime (`--runtime burn`): the model's own IR run by
//! [`crate::net::Net`] on the learning device (burn-wgpu on a GPU when the build has it,
//! else the `flex` CPU backend). This is how rewards are measured on GPU machines that have no
//! ONNX Runtime CUDA provider.

use super::runtime::Runtime;
use super::HostTensor;
use crate::error::Result;
use crate::net::{Dt, Net};
use std::path::Path;

pub struct BurnRuntime {
    net: Net,
    batch: usize,
    chw: (usize, usize, usize),
}

impl BurnRuntime {
    pub fn new(path: &Path, batch: usize, chw: (usize, usize, usize)) -> Result<BurnRuntime> {
        let model = crate::onnx::load(path)?;
        let (device, _) = crate::net::infer_device();
        let net = Net::new(&model, &device).map_err(|e| e.in_file(path))?;
        Ok(BurnRuntime {
            net,
            batch: batch.max(1),
            chw,
        })
    }
}

impl Runtime for BurnRuntime {
    fn for_each_batch(
        &mut self,
        x: &[f32],
        n: usize,
        sink: &mut dyn FnMut(usize, Vec<HostTensor>) -> Result<()>,
    ) -> Result<()> {
        let (c, h, w) = self.chw;
        let l = c * h * w;
        let progress = super::progress::Progress::new("burn", n);
        for s in (0..n).step_by(self.batch) {
            let e = (s + self.batch).min(n);
            let xb = Dt::from_vec(
                x[s * l..e * l].to_vec(),
                &[e - s, c, h, w],
                self.net.device(),
            );
            let outs = self
                .net
                .infer(xb)?
                .into_iter()
                .map(|d| HostTensor {
                    shape: d.dims(),
                    data: d.to_vec(),
                })
                .collect();
            progress.inc(e - s);
            sink(s, outs)?;
        }
        Ok(())
    }
}
