//! Folds an inference-mode `BatchNormalization` into the `Conv` that feeds it (only reader):
//! W' = W·s, b' = (b − mean)·s + β with s = γ / √(var + ε), per output channel. New weight
//! constants are created; the originals (possibly shared with other nodes) are not touched.
//! Enabled by `--fold-bn`.

use super::{bypass, Pass, PassOptions};
use crate::error::Result;
use crate::ir::ops::names;
use crate::ir::{Model, Node, Tensor, ValueDef};

pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }
    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize> {
        if !opts.fold_bn {
            return Ok(0);
        }
        let g = &mut model.graph;
        let ids: Vec<_> = g.node_ids().collect();
        let mut n = 0;
        for id in ids {
            let Some(bn) = g.nodes[id.0].as_ref() else {
                continue;
            };
            if !bn.is_standard()
                || bn.op_type != names::BATCH_NORMALIZATION
                || bn.outputs.iter().skip(1).flatten().count() > 0
            {
                continue;
            }
            if bn.attr_i("training_mode").unwrap_or(0) != 0 || bn.inputs.len() < 5 {
                continue;
            }
            let (Some(x), Some(y)) = (bn.inputs[0], bn.outputs[0]) else {
                continue;
            };
            let ValueDef::Node {
                node: conv_id,
                slot: 0,
            } = g.value(x).def
            else {
                continue;
            };
            let conv = g.node(conv_id);
            if !conv.is_standard()
                || conv.op_type != names::CONV
                || g.value(x).uses.len() != 1
                || g.is_graph_output(x)
            {
                continue;
            }
            let consts: Option<Vec<Vec<f32>>> = bn.inputs[1..5]
                .iter()
                .map(|v| {
                    v.and_then(|v| g.foldable_const(v)).and_then(|t| {
                        (t.dtype == crate::ir::DataType::FLOAT)
                            .then(|| t.as_f32s())
                            .flatten()
                    })
                })
                .collect();
            let Some(p) = consts else { continue };
            let eps = bn.attr_f("epsilon").unwrap_or(1e-5);
            let Some(folded) = fold(g, conv, &p, eps) else {
                continue;
            };
            let (w, b) = folded;
            let wname = format!("{}_bnfolded", g.value(conv.inputs[1].unwrap()).name);
            let bname = format!("{}_bias_bnfolded", g.value(x).name);
            let wv = g.add_const(&wname, w);
            let bv = g.add_const(&bname, b);
            g.set_input(conv_id, 1, Some(wv));
            if g.node(conv_id).inputs.len() < 3 {
                g.node_mut(conv_id).inputs.push(None);
            }
            g.set_input(conv_id, 2, Some(bv));
            if bypass(g, id, x, y) {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn fold(g: &crate::ir::Graph, conv: &Node, p: &[Vec<f32>], eps: f32) -> Option<(Tensor, Tensor)> {
    let wt = g.foldable_const(conv.inputs.get(1).copied()??)?;
    if wt.dtype != crate::ir::DataType::FLOAT {
        return None;
    }
    let w = wt.as_f32s()?;
    let cout = *wt.dims.first()? as usize;
    let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    if [gamma, beta, mean, var].iter().any(|v| v.len() != cout) || cout == 0 {
        return None;
    }
    let bias = match conv.inputs.get(2).copied().flatten() {
        Some(b) => {
            let t = g.foldable_const(b)?;
            let v = t.as_f32s()?;
            (v.len() == cout).then_some(v)?
        }
        None => vec![0.0; cout],
    };
    let per = w.len() / cout;
    let mut nw = Vec::with_capacity(w.len());
    let mut nb = Vec::with_capacity(cout);
    for c in 0..cout {
        let s = gamma[c] / (var[c] + eps).sqrt();
        nw.extend(w[c * per..(c + 1) * per].iter().map(|x| x * s));
        nb.push((bias[c] - mean[c]) * s + beta[c]);
    }
    Some((Tensor::f32(&wt.dims, nw), Tensor::f32(&[cout as i64], nb)))
}
