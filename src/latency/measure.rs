//! Measuring a latency profile on the runtime at hand: the whole model, then every Conv,
//! ConvTranspose and Gemm of the simplified model alone (a one-layer model with the layer's
//! attributes, input size and weight shape at the kept channel counts) on a grid of counts.
//!
//! The grid per channel space: the multiples of `round_to` the plan can keep, thinned to at most
//! `points` values spread evenly (always the smallest and the full count); a layer between two
//! prunable spaces is measured on the product grid, a depthwise layer on the diagonal. Each
//! point is the median of `runs` timed runs after two warm-up runs (the whole model: at least
//! 20).

use super::{LayerProfile, Profile, FORMAT, VERSION};
use crate::analysis::channels::SpaceId;
use crate::error::{Error, Result};
use crate::eval::{self, runtime};
use crate::ir::ops::{names, Linear, WeightLayout};
use crate::ir::{
    AttrValue, DataType, Dim, Graph, Model, NodeId, Tensor, ValueDef, ValueInfo, ValueType,
};
use crate::search::allocate::Rounding;
use crate::search::datafree::Pruner;
use std::path::Path;

/// How to measure.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kind: runtime::Kind,
    /// The runtime's own description (see [`runtime::choose`]).
    pub runtime_line: String,
    pub threads: usize,
    pub batch: usize,
    /// Grid points per channel space, at most.
    pub points: usize,
    /// Channel multiple of the grid (the plan's `--round-to`; capped, per space by its width).
    pub round_to: Rounding,
    /// Timed runs per median.
    pub runs: usize,
}

/// The model's single image input `[N, C, H, W]` at batch `batch`.
pub fn input_shape(p: &Pruner, batch: usize) -> Result<Vec<i64>> {
    let g = &p.model.graph;
    let inputs: Vec<_> = g
        .inputs
        .iter()
        .copied()
        .filter(|&v| !g.value(v).is_const())
        .collect();
    let shape = match inputs.as_slice() {
        [v] => p.analysis.fact(*v).concrete(),
        _ => None,
    };
    match shape {
        Some(mut s) if s.len() == 4 => {
            s[0] = batch as i64;
            Ok(s)
        }
        _ => Err(Error::Usage(
            "latency profiles need a model with one image input [N, C, H, W] of known size \
             (give it with --input-shape)"
                .into(),
        )),
    }
}

/// The grid of kept counts for a space of `len` channels.
pub fn grid(len: usize, round_to: usize, points: usize) -> Vec<usize> {
    let r = round_to.max(1);
    let mut all: Vec<usize> = (1..=len / r).map(|k| k * r).collect();
    if all.last() != Some(&len) {
        all.push(len);
    }
    let points = points.max(2);
    if all.len() <= points {
        return all;
    }
    let mut out: Vec<usize> = (0..points)
        .map(|i| all[(i * (all.len() - 1) + (points - 1) / 2) / (points - 1)])
        .collect();
    out.dedup();
    out
}

/// One layer to profile: its node, weight layout and channel spaces.
pub(super) struct Layer {
    pub(super) node: NodeId,
    layout: WeightLayout,
    pub(super) inp: Option<SpaceId>,
    pub(super) out: Option<SpaceId>,
    /// The data input's shape (batch first).
    x: Vec<i64>,
    /// The weight's shape.
    w: Vec<i64>,
    tied: bool,
}

impl Layer {
    /// The layer's MACs at full size, roughly (the weight applied at every input position):
    /// to rank layers by weight.
    pub(super) fn weight_macs(&self) -> f64 {
        let at = if self.layout.is_dense() || self.x.len() < 4 {
            1.0
        } else {
            (self.x[2] * self.x[3]) as f64
        };
        self.w.iter().product::<i64>() as f64 * at
    }

    /// The weight's shape and the input's, batch left out (layers of the same shape time
    /// alike).
    pub(super) fn shape(&self) -> (Vec<i64>, Vec<i64>) {
        (self.w.clone(), self.x.iter().skip(1).copied().collect())
    }
}

pub(super) fn layers(p: &Pruner, batch: usize) -> Vec<Layer> {
    let g = &p.model.graph;
    let free: std::collections::HashSet<usize> = p.free_atoms().into_iter().flatten().collect();
    // A space no plan can shrink is measured at its full count only.
    let changeable = |s: Option<SpaceId>| {
        s.filter(|&s| (0..p.ch.spaces[s].len).any(|i| free.contains(&p.ch.atom(s, i))))
    };
    let mut v = vec![];
    for (node, inp, out) in p.node_spaces() {
        let (inp, out) = (changeable(inp), changeable(out));
        let n = g.node(node);
        let Some(layout) = crate::ir::ops::weight_layout(n) else {
            continue;
        };
        let fact = |i: usize| {
            n.inputs
                .get(i)
                .copied()
                .flatten()
                .and_then(|v| p.analysis.fact(v).concrete())
        };
        let (Some(mut x), Some(w)) = (fact(0), fact(WeightLayout::INPUT)) else {
            continue;
        };
        let fits = match layout.kind {
            Linear::Conv | Linear::ConvTranspose => x.len() == 4,
            Linear::Gemm { trans_a, .. } => x.len() == 2 && !trans_a,
            Linear::MatMul => false,
        };
        if !fits || x.first().is_none_or(|&b| b < 1) {
            continue;
        }
        x[0] = batch as i64;
        // Depthwise: input and output channels are the same ones (the channel analysis ties
        // them), so the layer is measured on the diagonal.
        let tied = layout.kind == Linear::Conv
            && layout.group > 1
            && layout.group == x[1]
            && w[0] == x[1]
            && (inp.is_some() || out.is_some());
        let (inp, out) = if tied {
            (None, out.or(inp))
        } else {
            (inp, out)
        };
        v.push(Layer {
            node,
            layout,
            inp,
            out,
            x,
            w,
            tied,
        });
    }
    v
}

/// `full` scaled by `kept / len`, at least 1, rounded up to a multiple of `multiple`.
fn scaled(full: i64, kept: usize, len: usize, multiple: i64) -> i64 {
    let c = ((full as f64 * kept as f64 / len.max(1) as f64).round() as i64).max(1);
    let m = multiple.max(1);
    (((c + m - 1) / m) * m).min(full.max(m))
}

/// The one-layer model of `l` with `cin` / `cout` channels kept in its spaces (space counts),
/// and the image size `(C, H, W)` it takes.
fn micro(p: &Pruner, l: &Layer, cin: usize, cout: usize) -> Result<(Model, [usize; 3])> {
    let src = p.model.graph.node(l.node);
    let len = |s: Option<SpaceId>| s.map_or(1, |s| p.ch.spaces[s].len);
    let g_attr = l.layout.group.max(1);
    let (ci_full, co_full) = match l.layout.kind {
        Linear::Conv => (l.x[1], l.w[0]),
        Linear::ConvTranspose => (l.x[1], l.w[1] * g_attr),
        _ => (l.x[1], l.w[l.layout.out_axis]),
    };
    let (kin, kout) = (
        l.inp.map_or(len(None), |_| cin),
        l.out.map_or(len(None), |_| cout),
    );
    let grouped = if l.tied { 1 } else { g_attr };
    let mut co = scaled(co_full, kout, len(l.out), grouped);
    let mut ci = scaled(ci_full, kin, len(l.inp), grouped);
    if l.inp.is_none() {
        ci = ci_full;
    }
    if l.out.is_none() {
        co = co_full;
    }
    if l.tied {
        ci = co;
    }
    let group = if l.tied { co } else { g_attr };
    let mut w = l.w.clone();
    match l.layout.kind {
        Linear::Conv => {
            w[0] = co;
            w[1] = ci / group;
        }
        Linear::ConvTranspose => {
            w[0] = ci;
            w[1] = co / group;
        }
        _ => {
            w[l.layout.out_axis] = co;
            w[l.layout.in_axis] = ci;
        }
    }
    let dense = l.layout.is_dense();
    let image: [i64; 3] = if dense {
        [ci, 1, 1]
    } else {
        [ci, l.x[2], l.x[3]]
    };
    let mut g = Graph::new("layer".into());
    let x = g.add_value("x".into(), ValueDef::Input);
    let dims = [l.x[0], image[0], image[1], image[2]];
    g.value_mut(x).info = Some(float_info(Some(&dims)));
    g.inputs.push(x);
    let mut data = x;
    if dense {
        let flat = node(
            names::FLATTEN,
            vec![Some(x)],
            vec![("axis", AttrValue::Int(1))],
        );
        let id = g.add_node(flat, &["flat".into()]);
        data = g.node(id).outputs[0].expect("an output");
    }
    let numel = |d: &[i64]| d.iter().product::<i64>() as usize;
    let wv = g.add_const("w", Tensor::f32(&w, vec![0.01; numel(&w)]));
    let mut inputs = vec![Some(data), Some(wv)];
    if src.inputs.get(2).copied().flatten().is_some() {
        inputs.push(Some(
            g.add_const("b", Tensor::f32(&[co], vec![0.01; co as usize])),
        ));
    }
    let mut n = node(&src.op_type, inputs, vec![]);
    n.domain = src.domain.clone();
    n.attrs = src.attrs.clone();
    if l.tied {
        n.attrs.retain(|a| a.name != "group");
        n.attrs.push(attr("group", AttrValue::Int(group)));
    }
    let m = with_output(p, g, n);
    Ok((m, [image[0] as usize, image[1] as usize, image[2] as usize]))
}

/// The one-node graph `g` finished: `n` added, its output the graph's, in `p`'s opsets.
fn with_output(p: &Pruner, mut g: Graph, n: crate::ir::Node) -> Model {
    let id = g.add_node(n, &["y".into()]);
    let y = g.node(id).outputs[0].expect("an output");
    g.value_mut(y).info = Some(float_info(None));
    g.outputs.push(y);
    Model {
        graph: g,
        ir_version: p.model.ir_version,
        opsets: p.model.opsets.clone(),
        residue: Default::default(),
    }
}

/// A model that does nothing (one Identity on 1×1×1 images): the runtime's cost of a call.
fn trivial(p: &Pruner, batch: usize) -> (Model, [usize; 3]) {
    let mut g = Graph::new("trivial".into());
    let x = g.add_value("x".into(), ValueDef::Input);
    g.value_mut(x).info = Some(float_info(Some(&[batch as i64, 1, 1, 1])));
    g.inputs.push(x);
    let n = node(names::IDENTITY, vec![Some(x)], vec![]);
    (with_output(p, g, n), [1, 1, 1])
}

fn float_info(dims: Option<&[i64]>) -> ValueInfo {
    ValueInfo {
        ty: Some(ValueType::Tensor {
            elem: DataType::FLOAT,
            shape: dims.map(|d| d.iter().map(|&v| Dim::Known(v)).collect()),
        }),
        orig_ty: None,
        residue: Default::default(),
    }
}

fn attr(name: &str, value: AttrValue) -> crate::ir::Attribute {
    crate::ir::Attribute {
        name: name.into(),
        value,
        residue: Default::default(),
    }
}

fn node(
    op: &str,
    inputs: Vec<Option<crate::ir::ValueId>>,
    attrs: Vec<(&str, AttrValue)>,
) -> crate::ir::Node {
    crate::ir::Node {
        name: String::new(),
        op_type: op.into(),
        domain: String::new(),
        inputs,
        outputs: vec![],
        implicit_inputs: vec![],
        attrs: attrs.into_iter().map(|(n, v)| attr(n, v)).collect(),
        doc_string: String::new(),
        residue: Default::default(),
        order: 0,
    }
}

/// Median ms of one run of each model in `paths` on a batch of `batch` images of `chw`, the
/// models run alternately (`runs` timed rounds after two warm-up rounds).
pub fn time_all(s: &Settings, paths: &[&Path], chw: [usize; 3], runs: usize) -> Result<Vec<f64>> {
    let n = s.batch;
    let x = vec![0.5f32; n * chw[0] * chw[1] * chw[2]];
    let mut ms = paths
        .iter()
        .map(|p| runtime::open(s.kind, p, n, (chw[0], chw[1], chw[2]), s.threads))
        .collect::<Result<Vec<_>>>()?;
    let (med, _) = runtime::median_latency(&mut ms, &x, n, 2, runs.max(1), None)?;
    Ok(med)
}

pub(super) fn time(s: &Settings, path: &Path, chw: [usize; 3], runs: usize) -> Result<f64> {
    Ok(time_all(s, &[path], chw, runs)?[0])
}

/// The layer `l` alone at `cin` / `cout` kept (space counts): its median ms over `runs` timed
/// runs; a failure names the layer (`name`).
pub(super) fn time_layer(
    p: &Pruner,
    l: &Layer,
    (cin, cout): (usize, usize),
    (s, runs): (&Settings, usize),
    tmp: &eval::TempDir,
    name: &str,
) -> Result<f64> {
    let (m, chw) = micro(p, l, cin, cout)?;
    let path = tmp.save(&m, "layer.onnx")?;
    time(s, &path, chw, runs).map_err(|e| Error::Node {
        node: name.to_string(),
        msg: format!("could not time the layer alone: {e}"),
    })
}

/// Every profiled layer of `p` alone at the kept space counts `counts` (one value per channel
/// space): its key and median milliseconds, in the order [`profile`] measures them.
pub fn layers_alone(p: &Pruner, s: &Settings, counts: &[usize]) -> Result<Vec<(String, f64)>> {
    let keys = super::layer_keys(p);
    let tmp = eval::TempDir::new("alone")?;
    let mut v = vec![];
    for l in layers(p, s.batch) {
        let c = |sp: Option<SpaceId>| sp.map_or(1, |sp| counts[sp]);
        let cout = c(l.out);
        let cin = if l.tied { cout } else { c(l.inp) };
        let name = keys[&l.node].clone();
        let t = time_layer(p, &l, (cin, cout), (s, s.runs), &tmp, &name)?;
        v.push((name, t));
    }
    Ok(v)
}

/// Measures the profile of the model file `input` (analysed as `p`); `say` gets one line per
/// layer.
pub fn profile(input: &Path, p: &Pruner, s: &Settings, say: &dyn Fn(&str)) -> Result<Profile> {
    let shape = input_shape(p, s.batch)?;
    let chw = [shape[1] as usize, shape[2] as usize, shape[3] as usize];
    let sha = super::file_sha256(input)?;
    // The whole model is the base of every prediction: at least 20 runs.
    let whole_runs = s.runs.max(20);
    let model_ms = time(s, input, chw, whole_runs).map_err(|e| e.in_file(input))?;
    say(&format!(
        "whole model: {model_ms:.3} ms ({whole_runs} runs, batch {}, {} threads)",
        s.batch, s.threads
    ));
    let tmp = eval::TempDir::new("profile")?;
    let overhead = {
        let (m, chw) = trivial(p, s.batch);
        let path = tmp.save(&m, "trivial.onnx")?;
        time(s, &path, chw, s.runs.max(20))?
    };
    let ls = layers(p, s.batch);
    let keys = super::layer_keys(p);
    let mut out = vec![];
    for (k, l) in ls.iter().enumerate() {
        let len = |sp: Option<SpaceId>| sp.map(|sp| p.ch.spaces[sp].len);
        let gr = |sp: Option<SpaceId>| match len(sp) {
            Some(n) => grid(n, s.round_to.for_width(n), s.points),
            None => vec![1],
        };
        let out_counts = gr(l.out);
        let in_counts = if l.tied { vec![] } else { gr(l.inp) };
        let rows: Vec<usize> = if l.tied { vec![0] } else { in_counts.clone() };
        let name = &keys[&l.node];
        let mut ms = vec![];
        for &ci in &rows {
            let mut row = vec![];
            for &co in &out_counts {
                row.push(time_layer(p, l, (ci, co), (s, s.runs), &tmp, name)?);
            }
            ms.push(row);
        }
        let full = ms.last().and_then(|r| r.last()).copied().unwrap_or(0.0);
        say(&format!(
            "layer {}/{}: {name} {} ({} points, {full:.3} ms at full size)",
            k + 1,
            ls.len(),
            p.model.graph.node(l.node).op_type,
            rows.len() * out_counts.len()
        ));
        out.push(LayerProfile {
            node: name.clone(),
            op: p.model.graph.node(l.node).op_type.clone(),
            in_counts,
            out_counts,
            tied: l.tied,
            ms,
        });
    }
    Ok(Profile {
        format: FORMAT.into(),
        version: VERSION,
        model_sha256: sha,
        runtime: s.kind.name().into(),
        runtime_line: s.runtime_line.clone(),
        threads: s.threads,
        batch: s.batch,
        input_shape: shape,
        model_ms,
        runs: s.runs,
        overhead_ms: overhead,
        created_by: format!("onnx-prune {}", env!("CARGO_PKG_VERSION")),
        layers: out,
        staircase: None,
    })
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grids_hold_the_multiples_the_plan_can_keep() {
        assert_eq!(grid(16, 8, 6), vec![8, 16]);
        assert_eq!(grid(20, 8, 6), vec![8, 16, 20]);
        assert_eq!(grid(3, 8, 6), vec![3]);
        let g = grid(512, 8, 5);
        assert_eq!(g.len(), 5);
        assert_eq!((g[0], g[4]), (8, 512));
        assert!(g.iter().all(|c| c % 8 == 0));
        assert!(g.windows(2).all(|w| w[0] < w[1]));
    }
}
