//! The sub-network of a plan on the burn network by masking (`--agent joint`'s plans are
//! measured so, with no surgery per candidate): the removal masks of a plan
//! ([`Pruner::removal_masks`]: the consumers' weights the surgery cuts), the outputs with
//! those weights zeroed, and the inference copy of a training network they are measured on.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::net::{Dt, Net};
use crate::search::datafree::Pruner;
use burn::prelude::*;

/// Per parameter of `net` a plan cuts into: its index and the removal mask (1 on the weights
/// the surgery removes) on the network's inner device.
pub(crate) fn masks(p: &Pruner, net: &Net, keep: &[bool]) -> Result<Vec<(usize, Tensor<6>)>> {
    let inner = net.device().clone().inner();
    p.removal_masks(keep)?
        .into_iter()
        .map(|r| {
            let (name, mask) = (r.weight, r.mask);
            let i = net
                .params()
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--agent joint: the weight {name} is not a parameter of the burn network"
                    ))
                })?;
            let dims = net.param(i).t.dims();
            Ok((
                i,
                Tensor::<6>::from_data(TensorData::new(mask, dims), &inner),
            ))
        })
        .collect()
}

/// The network's outputs on `x` with the weights under `masks` zeroed (the sub-network of a
/// plan), in batches of 128; the network is left as it was.
pub(crate) fn masked_logits(
    net: &mut Net,
    masks: &[(usize, Tensor<6>)],
    x: &Dataset,
) -> Result<Vec<f32>> {
    let saved: Vec<(usize, Tensor<6>)> = masks.iter().map(|(i, _)| (*i, net.param(*i).t)).collect();
    for (i, m) in masks {
        let w = net.param(*i).t.inner();
        net.set_param(*i, w.clone() - w * m.clone());
    }
    let mut out = vec![];
    let l = x.sample_len();
    let mut res = Ok(());
    for s in (0..x.n).step_by(128) {
        let b = (x.n - s).min(128);
        let xb = Dt::from_vec(
            x.x[s * l..(s + b) * l].to_vec(),
            &[b, x.c, x.h, x.w],
            net.device(),
        );
        match net.infer(xb) {
            Ok(o) => out.extend(o.into_iter().next().map(|d| d.to_vec()).unwrap_or_default()),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    for (i, t) in saved {
        net.set_param(i, t);
    }
    res.map(|_| out)
}

/// The network's current weights on the inference device (no autodiff): what plans are
/// measured on, once per round.
pub(crate) fn eval_net(net: &Net) -> Result<Net> {
    Net::new(&net.write_back(), &crate::net::infer_device().0)
}
