//! Re-calibration: channel moments, BatchNorm statistics re-estimated from the pruned model,
//! moment matching where BN was folded, and the batch-statistics normalisers inserted for the
//! single-run re-calibration.

use super::*;
use crate::ir::ops::names;

#[derive(Default)]
pub(super) struct Moments {
    pub(super) sum: Vec<f64>,
    pub(super) sq: Vec<f64>,
    pub(super) count: f64,
}

impl Moments {
    /// Adds one sample `[C, hw]`, keeping the channels `keep` (in that order).
    pub(super) fn add(&mut self, img: &[f32], keep: &[usize], hw: usize) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; keep.len()];
            self.sq = vec![0.0; keep.len()];
        }
        for (j, &k) in keep.iter().enumerate() {
            let row = &img[k * hw..(k + 1) * hw];
            let (s, q) = row.iter().fold((0f64, 0f64), |(s, q), &v| {
                let v = v as f64;
                (s + v, q + v * v)
            });
            self.sum[j] += s;
            self.sq[j] += q;
        }
        self.count += hw as f64;
    }
    pub(super) fn mean_var(&self, j: usize) -> (f64, f64) {
        let n = self.count.max(1.0);
        let m = self.sum[j] / n;
        (m, (self.sq[j] / n - m * m).max(0.0))
    }
}

/// Moments a target's output should have during re-calibration: the following BN's running
/// mean/variance (and its epsilon), or the original output's moments (BN folded).
pub(super) fn reference_moments(
    m: &Model,
    t: &Target,
    orig: &Moments,
) -> (Vec<f32>, Vec<f32>, f32) {
    if let Some(bn) = following_bn(m, t.p_out) {
        let n = m.graph.node(bn);
        let get = |i: usize| {
            n.inputs[i]
                .and_then(|v| m.graph.foldable_const(v))
                .and_then(|t| t.as_f32s())
        };
        if let (Some(mean), Some(var)) = (get(3), get(4)) {
            let eps = n.attr_f("epsilon").unwrap_or(1e-5);
            return (mean, var, eps);
        }
    }
    let k = orig.sum.len();
    let (mean, var) = (0..k)
        .map(|j| {
            let (mu, v) = orig.mean_var(j);
            (mu as f32, v as f32)
        })
        .unzip();
    (mean, var, 1e-5)
}

pub(super) fn new_node(
    op: &str,
    name: String,
    inputs: Vec<Option<ValueId>>,
    order: u64,
) -> crate::ir::Node {
    crate::ir::Node {
        name,
        op_type: op.into(),
        domain: String::new(),
        inputs,
        outputs: vec![],
        implicit_inputs: vec![],
        attrs: vec![],
        doc_string: String::new(),
        residue: Default::default(),
        order,
    }
}

/// A copy of `model` where every target output y is replaced, for its readers, by
/// (y − μ_batch) / √(σ²_batch + ε) · √(v_ref + ε) + m_ref; returns it and the batch mean and
/// variance values of each target.
pub(super) fn with_normalizers(
    model: &Model,
    targets: &[Target],
    refs: &[(Vec<f32>, Vec<f32>, f32)],
) -> Result<(Model, Vec<(ValueId, ValueId)>)> {
    let mut m = model.clone();
    let opset = m.opset();
    let mut stats = vec![];
    for (t, (mref, vref, eps)) in targets.iter().zip(refs) {
        let g = &mut m.graph;
        let y = t.p_out;
        let rank = p_rank(model, t);
        if g.is_graph_output(y) || rank < 2 {
            return Err(Error::Usage(format!(
                "{}: cannot re-calibrate a graph output or a rank-{rank} value",
                t.label
            )));
        }
        let readers: Vec<crate::ir::Use> = g.value(y).uses.clone();
        let order = g.node(t.node).order;
        let c = mref.len() as i64;
        let mut shape = vec![1i64; rank];
        shape[1] = c;
        let axes: Vec<i64> = (0..rank as i64).filter(|&a| a != 1).collect();
        let base = g.fresh_name("recal");
        let mut e = Emit {
            g,
            base,
            order,
            opset,
            axes,
        };
        let mean = e.reduce_mean(y);
        let d = e.op(names::SUB, vec![y, mean], vec![]);
        let d2 = e.op(names::MUL, vec![d, d], vec![]);
        let var = e.reduce_mean(d2);
        let ev = e.g.add_const("recal_eps", Tensor::f32(&[], vec![*eps]));
        let ve = e.op(names::ADD, vec![var, ev], vec![]);
        let sd = e.op(names::SQRT, vec![ve], vec![]);
        let z = e.op(names::DIV, vec![d, sd], vec![]);
        let scale: Vec<f32> = vref.iter().map(|v| (v + eps).sqrt()).collect();
        let sc = e.g.add_const("recal_scale", Tensor::f32(&shape, scale));
        let mc =
            e.g.add_const("recal_shift", Tensor::f32(&shape, mref.clone()));
        let zs = e.op(names::MUL, vec![z, sc], vec![]);
        let out = e.op(names::ADD, vec![zs, mc], vec![]);
        let g = e.g;
        for u in readers {
            if let crate::ir::Slot::Input(i) = u.slot {
                g.set_input(u.node, i, Some(out));
            }
        }
        stats.push((mean, var));
    }
    Ok((m, stats))
}

/// Emits the nodes of one normaliser.
pub(super) struct Emit<'a> {
    pub(super) g: &'a mut crate::ir::Graph,
    pub(super) base: String,
    pub(super) order: u64,
    pub(super) opset: i64,
    pub(super) axes: Vec<i64>,
}

impl Emit<'_> {
    pub(super) fn op(
        &mut self,
        ty: &str,
        ins: Vec<ValueId>,
        attrs: Vec<crate::ir::Attribute>,
    ) -> ValueId {
        let name = self.g.fresh_name(&format!("{}_{ty}", self.base));
        let mut n = new_node(
            ty,
            name.clone(),
            ins.into_iter().map(Some).collect(),
            self.order,
        );
        n.attrs = attrs;
        let id = self.g.add_node(n, &[name]);
        self.g.node(id).outputs[0].unwrap()
    }

    /// Mean over every axis but 1, kept as size-1 dims (axes as attribute before opset 18).
    pub(super) fn reduce_mean(&mut self, v: ValueId) -> ValueId {
        use crate::ir::{AttrValue, Attribute};
        let attr = |name: &str, value| Attribute {
            name: name.into(),
            value,
            residue: Default::default(),
        };
        let keep = attr("keepdims", AttrValue::Int(1));
        if self.opset >= 18 {
            let t = Tensor::i64(&[self.axes.len() as i64], self.axes.clone());
            let ax = self.g.add_const("recal_axes", t);
            self.op(names::REDUCE_MEAN, vec![v, ax], vec![keep])
        } else {
            let a = attr("axes", AttrValue::Ints(self.axes.clone()));
            self.op(names::REDUCE_MEAN, vec![v], vec![a, keep])
        }
    }
}

/// The BatchNormalization reading `v` when it is `v`'s only reader.
pub(super) fn following_bn(m: &Model, v: ValueId) -> Option<NodeId> {
    let val = m.graph.value(v);
    if val.uses.len() != 1 || m.graph.is_graph_output(v) {
        return None;
    }
    let u = val.uses[0];
    let n = m.graph.node(u.node);
    (n.op_type == names::BATCH_NORMALIZATION
        && u.slot == crate::ir::Slot::Input(0)
        && n.outputs.len() == 1
        && n.inputs.len() == 5)
        .then_some(u.node)
}

pub(super) fn write_bn_stats(m: &mut Model, bn: NodeId, mp: &Moments) -> Result<()> {
    let c = mp.sum.len();
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|j| {
            let (mu, v) = mp.mean_var(j);
            (mu as f32, v as f32)
        })
        .unzip();
    let name = m.graph.node(bn).label(bn);
    replace_const(
        m,
        bn,
        3,
        Tensor::f32(&[c as i64], mean),
        &format!("{name}_mean_recal"),
    );
    replace_const(
        m,
        bn,
        4,
        Tensor::f32(&[c as i64], var),
        &format!("{name}_var_recal"),
    );
    Ok(())
}

/// Scales and shifts the target's output channels so their mean/std match the original's.
pub(super) fn moment_match(m: &mut Model, t: &Target, mp: &Moments, mo: &Moments) -> Result<()> {
    let n = m.graph.node(t.node);
    let wv = n.inputs[1].unwrap();
    let wt = m.graph.foldable_const(wv).unwrap().clone();
    let Some(Arr::F32(mut w)) = wt.to_arr() else {
        return Err(Error::Usage(format!("{}: weight is not float32", t.label)));
    };
    let k = t.kout.len();
    if mp.sum.len() != k || mo.sum.len() != k {
        return Err(Error::Usage(format!("{}: channel count mismatch", t.label)));
    }
    let axis = crate::ir::ops::weight_layout(n).map_or(1, |l| l.out_axis);
    let old_b: Vec<f32> = n
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| m.graph.foldable_const(b))
        .and_then(|b| b.as_f32s())
        .map(|b| if b.len() == k { b } else { vec![b[0]; k] })
        .unwrap_or_else(|| vec![0.0; k]);
    let mut new_b = vec![0f32; k];
    for j in 0..k {
        let (mu_p, var_p) = mp.mean_var(j);
        let (mu_o, var_o) = mo.mean_var(j);
        let a = if var_p > 1e-12 {
            (var_o / var_p).sqrt()
        } else {
            1.0
        };
        w.index_axis_mut(ndarray::Axis(axis), j)
            .mapv_inplace(|x| (x as f64 * a) as f32);
        new_b[j] = (a * (old_b[j] as f64 - mu_p) + mu_o) as f32;
    }
    let name = m.graph.value(wv).name.clone();
    replace_const(m, t.node, 1, Arr::F32(w).to_tensor(), &format!("{name}_mm"));
    replace_const(
        m,
        t.node,
        2,
        Tensor::f32(&[k as i64], new_b),
        &format!("{name}_mm_bias"),
    );
    Ok(())
}
