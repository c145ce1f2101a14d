//! Lossless shrinking: finds channel atoms that provably contribute nothing and removes exactly
//! those. A channel is *dead* when every layer that consumes it either reads zeros there or has
//! zero weights for it. Zeros are propagated forward per (value, channel): an all-zero filter
//! with zero bias produces zeros; zero-preserving ops (ReLU, pooling, HardSwish, ...) keep them;
//! BatchNorm with γ = β = 0 creates them; `Mul` by a zero channel gives zeros; `Add` needs every
//! operand zero; channel padding with 0 is zero. Anything else is assumed non-zero. What an op
//! does to zeros is its registry row's `ir::ops::Zeros`.

use super::datafree::Pruner;
use crate::analysis::channels::Role;
use crate::ir::ops::{self, Linear, WeightLayout, Zeros};
use crate::ir::ValueId;
use std::collections::HashMap;

fn f32s(p: &Pruner, v: Option<ValueId>) -> Option<Vec<f32>> {
    p.model.graph.foldable_const(v?)?.as_f32s()
}

/// Per-channel zero flags of every value that carries channels.
fn zero_facts(p: &Pruner) -> HashMap<ValueId, Vec<bool>> {
    let g = &p.model.graph;
    let mut z: HashMap<ValueId, Vec<bool>> = HashMap::new();
    let len = |v: ValueId| p.ch.space_of.get(&v).map(|&s| p.ch.spaces[s].len);
    let order = g.topo_order().unwrap_or_default();
    for id in order {
        let n = g.node(id);
        let Some(out) = n.outputs.first().copied().flatten() else {
            continue;
        };
        let Some(c) = len(out) else { continue };
        let inp = n.inputs.first().copied().flatten();
        let zin = |i: usize| {
            n.inputs
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| z.get(&v).cloned())
        };
        let layout = ops::weight_layout(n);
        let zeros = ops::def(n).map_or(Zeros::Unknown, |d| d.zeros);
        let flags: Vec<bool> = match zeros {
            _ if layout.is_some() => {
                let Some(layout) = layout else {
                    continue;
                };
                let Some(w) = n
                    .inputs
                    .get(WeightLayout::INPUT)
                    .copied()
                    .flatten()
                    .and_then(|w| g.foldable_const(w))
                    .and_then(|t| t.to_arr())
                else {
                    continue;
                };
                let crate::ir::Arr::F32(w) = w else { continue };
                let axis = layout.out_axis;
                let bias = f32s(p, n.inputs.get(2).copied().flatten());
                let depthwise =
                    layout.kind == Linear::Conv && layout.group > 1 && w.shape()[1] == 1;
                let zi = zin(0);
                (0..c)
                    .map(|k| {
                        let b0 = bias.as_ref().is_none_or(|b| {
                            b.get(k).is_some_and(|&x| x == 0.0) || (b.len() == 1 && b[0] == 0.0)
                        });
                        let filt0 = k < w.shape()[axis]
                            && w.index_axis(ndarray::Axis(axis), k)
                                .iter()
                                .all(|&x| x == 0.0);
                        let in0 = depthwise
                            && zi.as_ref().is_some_and(|f| {
                                let m = (c / f.len().max(1)).max(1);
                                f.get(k / m).copied().unwrap_or(false)
                            });
                        b0 && (filt0 || in0)
                    })
                    .collect()
            }
            Zeros::Norm => {
                let gamma = f32s(p, n.inputs.get(1).copied().flatten());
                let beta = f32s(p, n.inputs.get(2).copied().flatten());
                let (mean, var) = (
                    f32s(p, n.inputs.get(3).copied().flatten()),
                    f32s(p, n.inputs.get(4).copied().flatten()),
                );
                let eps = n.attr_f("epsilon").unwrap_or(1e-5);
                let zi = zin(0);
                (0..c)
                    .map(|k| {
                        let (gk, bk) = (
                            gamma.as_ref().and_then(|v| v.get(k).copied()),
                            beta.as_ref().and_then(|v| v.get(k).copied()),
                        );
                        if gk == Some(0.0) && bk == Some(0.0) {
                            return true;
                        }
                        // A zero input gives β − γ·μ/√(var+ε) (BatchNorm only).
                        let input_zero = zi
                            .as_ref()
                            .is_some_and(|f| f.get(k).copied().unwrap_or(false));
                        // (InstanceNormalization has no running mean/var inputs.)
                        match (
                            gk,
                            bk,
                            mean.as_ref().and_then(|v| v.get(k)),
                            var.as_ref().and_then(|v| v.get(k)),
                        ) {
                            (Some(gk), Some(bk), Some(&mk), Some(&vk)) => {
                                input_zero && bk - gk * mk / (vk + eps).sqrt() == 0.0
                            }
                            _ => false,
                        }
                    })
                    .collect()
            }
            Zeros::Clip => {
                let lo = f32s(p, n.inputs.get(1).copied().flatten())
                    .and_then(|v| v.first().copied())
                    .unwrap_or(f32::MIN);
                let hi = f32s(p, n.inputs.get(2).copied().flatten())
                    .and_then(|v| v.first().copied())
                    .unwrap_or(f32::MAX);
                match zin(0) {
                    Some(f) if lo <= 0.0 && hi >= 0.0 && f.len() == c => f,
                    _ => continue,
                }
            }
            Zeros::Preserves => match zin(0) {
                Some(f) if f.len() == c => f,
                _ => continue,
            },
            Zeros::Spread => match zin(0) {
                Some(f) if !f.is_empty() && c % f.len() == 0 => {
                    let inner = c / f.len();
                    (0..c).map(|j| f[j / inner]).collect()
                }
                _ => continue,
            },
            Zeros::AllOperands | Zeros::AnyOperand | Zeros::Numerator => {
                let mut per_operand: Vec<Vec<bool>> = vec![];
                for (i, v) in n.inputs.iter().enumerate() {
                    let Some(v) = *v else { continue };
                    if let Some(f) = z.get(&v).filter(|f| f.len() == c) {
                        per_operand.push(f.clone());
                    } else if let Some(vals) = g.foldable_const(v).and_then(|t| t.as_f32s()) {
                        per_operand.push(
                            (0..c)
                                .map(|k| {
                                    if vals.len() == 1 {
                                        vals[0] == 0.0
                                    } else if vals.len() == c {
                                        vals[k] == 0.0
                                    } else {
                                        vals.iter().all(|&x| x == 0.0)
                                    }
                                })
                                .collect(),
                        );
                    } else {
                        per_operand.push(vec![false; c]);
                    }
                    if zeros == Zeros::Numerator && i == 0 {
                        break;
                    }
                }
                if per_operand.is_empty() {
                    continue;
                }
                (0..c)
                    .map(|k| {
                        if zeros == Zeros::AnyOperand {
                            per_operand.iter().any(|f| f[k])
                        } else {
                            per_operand.iter().all(|f| f[k])
                        }
                    })
                    .collect()
            }
            Zeros::Concat => {
                let parts: Option<Vec<Vec<bool>>> = n
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| z.get(&v).cloned()))
                    .collect();
                match parts.map(|p| p.concat()).filter(|f| f.len() == c) {
                    Some(f) => f,
                    None => continue,
                }
            }
            Zeros::Pad => {
                let (Some(f), Some(pads)) = (
                    zin(0),
                    n.inputs
                        .get(1)
                        .copied()
                        .flatten()
                        .and_then(|v| g.foldable_const(v))
                        .and_then(|t| t.as_i64s()),
                ) else {
                    continue;
                };
                let Some(&is) = inp.and_then(|v| p.ch.space_of.get(&v)) else {
                    continue;
                };
                let axis = p.ch.spaces[is].axis;
                let b = pads.get(axis).copied().unwrap_or(0).max(0) as usize;
                let value_zero = f32s(p, n.inputs.get(2).copied().flatten())
                    .is_none_or(|v| v.iter().all(|&x| x == 0.0));
                (0..c)
                    .map(|j| {
                        if j < b || j >= b + f.len() {
                            value_zero
                        } else {
                            f[j - b]
                        }
                    })
                    .collect()
            }
            Zeros::Unknown => continue,
        };
        if flags.len() == c && flags.iter().any(|&x| x) {
            z.insert(out, flags);
        }
    }
    z
}

/// Which atoms are provably dead (removable without changing any output).
pub fn dead_atoms(p: &Pruner) -> Vec<bool> {
    let g = &p.model.graph;
    let z = zero_facts(p);
    let mut dead: Vec<bool> = p.ch.atoms.iter().map(|a| a.blocked.is_none()).collect();
    // Atoms of declined groups, and groups without producers, stay.
    for grp in &p.ch.groups {
        if grp.declined.is_some() {
            for &a in &grp.atoms {
                dead[a] = false;
            }
        }
    }
    for r in &p.ch.roles {
        let Role::Consumer { node, space } = *r else {
            continue;
        };
        let n = g.node(node);
        let x = n.inputs.first().copied().flatten();
        let zx = x.and_then(|v| z.get(&v));
        let w = n
            .inputs
            .get(WeightLayout::INPUT)
            .copied()
            .flatten()
            .and_then(|w| g.foldable_const(w))
            .and_then(|t| t.to_arr());
        let layout = ops::weight_layout(n);
        let axis = layout.map_or(0, |l| l.in_axis);
        for i in 0..p.ch.spaces[space].len {
            let a = p.ch.atom(space, i);
            if !dead[a] {
                continue;
            }
            let input_zero = zx.is_some_and(|f| f.get(i).copied().unwrap_or(false));
            // Grouped convs index input channels per group: only the zero-input proof applies.
            let grouped = layout.is_some_and(|l| l.kind == Linear::Conv && l.group > 1);
            let weight_zero = !grouped
                && match &w {
                    Some(crate::ir::Arr::F32(w)) if i < w.shape()[axis] => w
                        .index_axis(ndarray::Axis(axis), i)
                        .iter()
                        .all(|&v| v == 0.0),
                    _ => false,
                };
            if !(input_zero || weight_zero) {
                dead[a] = false;
            }
        }
    }
    // A dead atom must also not reach anything but consumers: every value of its spaces that is
    // read by a node that is neither a consumer nor channel-wise is already blocked by the
    // analysis, so only the atom's own producers/consumers remain. Keep one channel per space.
    dead
}
