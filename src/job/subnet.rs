//! `--joint-train sub`: the joint phase trains the sub-network of the structure the agent
//! currently selects, at that network's cost, instead of the whole network with the removed
//! weights shrinking (`--joint-train full`). Before each stretch between the agent's rounds
//! the current weights are cut to the structure by the real surgery ([`Pruner::apply_to`]);
//! after it, the cut network's parameters, running statistics and optimiser state are written
//! back into the whole network at the positions they were cut from, so the agent's next round
//! measures its plans on the whole network as before.
//!
//! The positions come from the surgery itself: it cuts copies of the model whose weights hold
//! their own global positions (two passes, the low and the high digits base 2²², each exact in
//! f32), so every op the surgery supports maps back without a rule of its own. A weight the
//! surgery computes rather than selects fails the check (one source tensor, increasing
//! positions), and the job then trains the whole network; the first cut is also run against
//! the masked whole network on the probe ([`sub_checked`]).
//!
//! Invariant: the whole network's weights outside the structure do not change during a stretch
//! (the alignment shrinks the removed consumers' weights once per stretch, by what its per-step
//! strength would over the steps run).

use super::masked::{eval_net, masked_logits, masks};
use crate::budget::Clock;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::ir::{Model, Tensor as IrTensor, ValueDef, ValueId};
use crate::learn::train::Trainer;
use crate::net::Net;
use crate::search::datafree::Pruner;
use burn::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The digits of a position: each pass's tags stay below this, exact in f32.
const BASE: usize = 1 << 22;

/// One slot (parameter or buffer) of the cut network: the whole network's slot of the same
/// kind it was cut from and the positions there, in order.
#[derive(Clone, Debug)]
struct Origin {
    slot: usize,
    positions: Vec<usize>,
}

/// The cut network of one structure and where its weights live in the whole network.
pub(crate) struct SubNet {
    pub(crate) net: Net,
    params: Vec<Origin>,
    buffers: Vec<Origin>,
}

/// The whole network's parameters then buffers, as host vectors.
fn slot_values(net: &Net) -> Vec<Vec<f32>> {
    (0..net.params().len())
        .map(|i| net.param(i).to_vec())
        .chain((0..net.buffers().len()).map(|i| net.buffer(i).to_vec()))
        .collect()
}

/// `model` with the constant of every slot of `net` (by name) holding `values[k]` (k over the
/// parameters, then the buffers).
fn with_slots(model: &Model, net: &Net, values: &[Vec<f32>]) -> Result<Model> {
    let mut m = model.clone();
    let by_name: HashMap<String, ValueId> = m
        .graph
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), ValueId(i)))
        .collect();
    for (k, s) in net.params().iter().chain(net.buffers()).enumerate() {
        let v = *by_name.get(&s.name).ok_or_else(|| {
            Error::Invalid(format!(
                "--joint-train sub: the weight {} is not in the model",
                s.name
            ))
        })?;
        let dims: Vec<i64> = s.dims.iter().map(|&d| d as i64).collect();
        match &mut m.graph.value_mut(v).def {
            ValueDef::Const(c) => {
                c.tensor = Arc::new(IrTensor::f32(&dims, values[k].clone()));
                c.external = false;
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "--joint-train sub: the weight {} is not a constant",
                    s.name
                )))
            }
        }
    }
    Ok(m)
}

/// The float values of the constant named `name` in `m`.
fn const_values(m: &Model, name: &str) -> Option<Vec<f32>> {
    let v = m.graph.values.iter().position(|v| v.name == name)?;
    match m.graph.foldable_const(ValueId(v))?.to_arr()? {
        crate::ir::Arr::F32(a) => Some(a.iter().copied().collect()),
        _ => None,
    }
}

impl SubNet {
    /// Cuts `net`'s current weights (a network of `p`'s model) to the structure `keep` and
    /// builds the cut network on `device`, with the positions of its weights.
    pub(crate) fn cut(p: &Pruner, net: &Net, keep: &[bool], device: &Device) -> Result<SubNet> {
        let values = slot_values(net);
        let cut = p.apply_to(&with_slots(&p.model, net, &values)?, keep)?;
        let sub = Net::new(&cut, device)?;
        // The tagged cuts: position g of the whole network's slots as (g mod BASE, g / BASE).
        let mut offsets = Vec::with_capacity(values.len() + 1);
        offsets.push(0usize);
        for v in &values {
            offsets.push(offsets.last().unwrap() + v.len());
        }
        let total = *offsets.last().unwrap();
        let tagged = |digit: usize| -> Result<Model> {
            let tags: Vec<Vec<f32>> = values
                .iter()
                .enumerate()
                .map(|(k, v)| {
                    (0..v.len())
                        .map(|j| {
                            let g = offsets[k] + j;
                            (if digit == 0 { g % BASE } else { g / BASE }) as f32
                        })
                        .collect()
                })
                .collect();
            p.apply_to(&with_slots(&p.model, net, &tags)?, keep)
        };
        let (lo, hi) = (tagged(0)?, tagged(1)?);
        let n_params = net.params().len();
        let origin = |name: &str, n: usize, param: bool| -> Result<Origin> {
            let bad = |why: &str| {
                Error::Invalid(format!(
                    "--joint-train sub: the cut weight {name} {why}; train the whole network (--joint-train full)"
                ))
            };
            let (Some(l), Some(h)) = (const_values(&lo, name), const_values(&hi, name)) else {
                return Err(bad("has no source in the model"));
            };
            if l.len() != n || h.len() != n {
                return Err(bad("changed its size between cuts"));
            }
            let mut slot = None;
            let mut positions = Vec::with_capacity(n);
            for (a, b) in l.iter().zip(&h) {
                if a.fract() != 0.0 || b.fract() != 0.0 || *a < 0.0 || *b < 0.0 {
                    return Err(bad("is computed, not selected, by the surgery"));
                }
                let g = *a as usize + *b as usize * BASE;
                if g >= total {
                    return Err(bad("is computed, not selected, by the surgery"));
                }
                let k = offsets.partition_point(|&o| o <= g) - 1;
                if *slot.get_or_insert(k) != k {
                    return Err(bad("comes from several weights"));
                }
                let j = g - offsets[k];
                if positions.last().is_some_and(|&q| q >= j) {
                    return Err(bad("is not an ordered selection"));
                }
                positions.push(j);
            }
            let k = slot.ok_or_else(|| bad("is empty"))?;
            match (param, k < n_params) {
                (true, true) => Ok(Origin { slot: k, positions }),
                (false, false) => Ok(Origin {
                    slot: k - n_params,
                    positions,
                }),
                _ => Err(bad("changed between parameter and running statistic")),
            }
        };
        let params = sub
            .params()
            .iter()
            .map(|s| origin(&s.name, s.dims.iter().product(), true))
            .collect::<Result<Vec<_>>>()?;
        let buffers = sub
            .buffers()
            .iter()
            .map(|s| origin(&s.name, s.dims.iter().product(), false))
            .collect::<Result<Vec<_>>>()?;
        Ok(SubNet {
            net: sub,
            params,
            buffers,
        })
    }

    /// Points `trainer`'s optimiser state at this network's share of it; returns the whole
    /// network's state for [`SubNet::leave`].
    pub(crate) fn enter(&self, trainer: &mut Trainer) -> Vec<Vec<Tensor<6>>> {
        let full = trainer.swap_state(vec![]);
        trainer.swap_state(self.gather_state(&full));
        full
    }

    /// After a stretch on this network: its weights, running statistics and `trainer`'s state
    /// written back into `whole` and `full`, which `trainer` holds again.
    pub(crate) fn leave(
        &self,
        trainer: &mut Trainer,
        mut full: Vec<Vec<Tensor<6>>>,
        whole: &mut Net,
    ) {
        let state = trainer.swap_state(vec![]);
        self.write_back(whole, &state, &mut full);
        trainer.swap_state(full);
    }

    /// The cut network's share of the whole network's optimiser state (per parameter, its
    /// buffers), on the cut network's inner device.
    pub(crate) fn gather_state(&self, full: &[Vec<Tensor<6>>]) -> Vec<Vec<Tensor<6>>> {
        let inner = self.net.device().clone().inner();
        self.params
            .iter()
            .enumerate()
            .map(|(j, o)| {
                let dims = self.net.param(j).t.dims();
                full[o.slot]
                    .iter()
                    .map(|t| {
                        let v = host(t);
                        let g: Vec<f32> = o.positions.iter().map(|&q| v[q]).collect();
                        Tensor::<6>::from_data(TensorData::new(g, dims), &inner)
                    })
                    .collect()
            })
            .collect()
    }

    /// Writes the cut network's parameters, running statistics and optimiser state (`state`,
    /// per parameter of the cut network) back into `whole` and its state `full` at the
    /// positions they were cut from.
    pub(crate) fn write_back(
        &self,
        whole: &mut Net,
        state: &[Vec<Tensor<6>>],
        full: &mut [Vec<Tensor<6>>],
    ) {
        let inner = whole.device().clone().inner();
        let put = |t: &Tensor<6>, o: &Origin, part: Vec<f32>| -> Tensor<6> {
            let mut v = host(t);
            for (&q, x) in o.positions.iter().zip(part) {
                v[q] = x;
            }
            Tensor::<6>::from_data(TensorData::new(v, t.dims()), &inner)
        };
        for (j, o) in self.params.iter().enumerate() {
            let w = put(&whole.param(o.slot).t, o, self.net.param(j).to_vec());
            whole.set_param(o.slot, w);
            for (s, t) in state[j].iter().enumerate() {
                full[o.slot][s] = put(&full[o.slot][s], o, host(t));
            }
        }
        for (j, o) in self.buffers.iter().enumerate() {
            let b = put(&whole.buffer(o.slot).t, o, self.net.buffer(j).to_vec());
            whole.set_buffer(o.slot, b);
        }
    }
}

/// [`SubNet::cut`] and the time it took; a cut whose weights cannot be mapped back gives a note
/// and `None`: the whole network trains.
pub(crate) fn try_cut(
    p: &Pruner,
    net: &Net,
    keep: &[bool],
    device: &Device,
    out: &dyn super::Progress,
    clock: &dyn Clock,
) -> Result<Option<(SubNet, Duration)>> {
    let t0 = clock.now();
    match SubNet::cut(p, net, keep, device) {
        Ok(s) => Ok(Some((s, clock.now().saturating_sub(t0)))),
        Err(Error::Invalid(why)) => {
            out.line(&format!("note: {why}; the whole network trains"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `--joint-train sub`'s cut network of `keep` from `net`'s weights and the time the cut took
/// (the check not counted), if its outputs on the probe are the masked whole network's (within
/// 1e-3 of the largest logit); else, or when the surgery's weights cannot be mapped back, a
/// note and `None`: the whole network trains.
pub(crate) fn sub_checked(
    p: &Pruner,
    net: &Net,
    keep: &[bool],
    device: &Device,
    probe: &Dataset,
    out: &dyn super::Progress,
    clock: &dyn Clock,
) -> Result<Option<(SubNet, Duration)>> {
    let Some((mut s, took)) = try_cut(p, net, keep, device, out, clock)? else {
        return Ok(None);
    };
    let mut ev = eval_net(net)?;
    let m = masks(p, &ev, keep)?;
    let n = probe.n.min(128);
    let x = probe.subset(&(0..n).collect::<Vec<_>>());
    let want = masked_logits(&mut ev, &m, &x)?;
    let got = masked_logits(&mut s.net, &[], &x)?;
    let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
    let diff = want
        .iter()
        .zip(&got)
        .fold(0.0f32, |a, (w, g)| a.max((w - g).abs()));
    if got.len() != want.len() || diff > 1e-3 * scale {
        out.line(&format!(
            "note: --joint-train sub: the cut network's outputs differ from the masked whole network's by {diff:.2e} (of {scale:.2e}); the whole network trains"
        ));
        return Ok(None);
    }
    Ok(Some((s, took)))
}

fn host(t: &Tensor<6>) -> Vec<f32> {
    crate::learn::nets::values(t.clone())
}
