//! Operator knowledge, one file per op family, each starting with links to the ONNX spec.
//!
//! Every op implements [`Op`]: given the facts known about its inputs (type, shape, and the
//! value when constant) it produces the facts of its outputs, computing values when all inputs
//! are constant (that is constant folding), and it reports its cost in MACs. Each family file
//! declares its registry rows (`DEFS`: name, implementation, how channels flow, what happens
//! to zeros; see [`OpDef`]); [`def`] finds a node's row. Adding an op is a row in its family's
//! file (and its `Op` impl when no existing one fits), never growing a `match` on op types.

mod binary;
mod concat;
mod constant_of_shape;
mod conv;
mod def;
mod elementwise;
pub mod eval;
mod expand;
mod gather;
mod gemm;
mod normalization;
mod pad;
mod pool;
mod range;
mod reduce;
mod reshape;
mod resize;
mod shape;
mod slice;
mod split;
mod transpose;

use super::graph::{Dim, Node};
use super::tensor::{DataType, Tensor};
use std::sync::Arc;

pub use def::{Channels, OpDef, Zeros};

/// Op type names for passes that build or recognise particular nodes (each is written once,
/// in its family's file).
pub mod names {
    pub use super::{
        binary::{ADD, DIV, MUL, SUB},
        concat::CONCAT,
        conv::CONV,
        elementwise::{DROPOUT, IDENTITY, RELU, SQRT},
        gather::GATHER,
        normalization::BATCH_NORMALIZATION,
        reduce::REDUCE_MEAN,
        reshape::{FLATTEN, RESHAPE},
        resize::RESIZE,
        shape::SHAPE,
        slice::SLICE,
    };
}

/// What is known about a value during analysis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fact {
    pub dtype: Option<DataType>,
    /// `None`: rank unknown.
    pub shape: Option<Vec<Dim>>,
    /// The value, when it is a constant.
    pub value: Option<Arc<Tensor>>,
    /// For small 1-D/0-D integer tensors computed from shapes: the elements as dims, possibly
    /// symbolic (ONNX "data propagation"). Lets `Reshape(x, Concat(Shape(x)[0], -1))` resolve.
    pub sym: Option<Vec<Dim>>,
}

impl Fact {
    pub fn new(dtype: Option<DataType>, shape: Option<Vec<Dim>>) -> Fact {
        Fact {
            dtype,
            shape,
            ..Default::default()
        }
    }
    pub fn known(dtype: Option<DataType>, dims: &[i64]) -> Fact {
        Fact::new(dtype, Some(dims.iter().map(|&d| Dim::Known(d)).collect()))
    }
    pub fn from_tensor(t: Arc<Tensor>) -> Fact {
        let sym = small_int_dims(&t);
        Fact {
            dtype: Some(t.dtype),
            shape: Some(t.dims.iter().map(|&d| Dim::Known(d)).collect()),
            value: Some(t),
            sym,
        }
    }
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }
    /// The shape when every dim is a known number.
    pub fn concrete(&self) -> Option<Vec<i64>> {
        concrete(self.shape.as_ref()?)
    }
    /// Integer contents of a constant (e.g. axes, pads).
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.value.as_ref()?.as_i64s()
    }
    /// Integer contents as dims (constant or symbolic).
    pub fn dims_value(&self) -> Option<Vec<Dim>> {
        if let Some(v) = self.ints() {
            return Some(v.into_iter().map(Dim::Known).collect());
        }
        self.sym.clone()
    }
}

fn small_int_dims(t: &Tensor) -> Option<Vec<Dim>> {
    if t.dims.len() > 1 || t.numel() > 64 || !matches!(t.dtype, DataType::INT64 | DataType::INT32) {
        return None;
    }
    Some(t.as_i64s()?.into_iter().map(Dim::Known).collect())
}

pub fn concrete(s: &[Dim]) -> Option<Vec<i64>> {
    s.iter()
        .map(|d| match d {
            Dim::Known(v) => Some(*v),
            _ => None,
        })
        .collect()
}

/// Inputs of one inference call.
pub struct InferCx<'a> {
    pub node: &'a Node,
    pub opset: i64,
    pub inputs: Vec<Option<&'a Fact>>,
    /// Whether constant values may be computed (false when the caller only wants shapes).
    pub eval: bool,
}

pub type OpResult<T> = Result<T, String>;

impl<'a> InferCx<'a> {
    pub fn input(&self, i: usize) -> OpResult<&'a Fact> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input #{i}"))
    }
    pub fn opt_input(&self, i: usize) -> Option<&'a Fact> {
        self.inputs.get(i).copied().flatten()
    }
    pub fn shape(&self, i: usize) -> OpResult<&'a [Dim]> {
        self.input(i)?
            .shape
            .as_deref()
            .ok_or_else(|| format!("shape of input #{i} is unknown"))
    }
    pub fn dtype(&self, i: usize) -> Option<DataType> {
        self.opt_input(i).and_then(|f| f.dtype)
    }
    /// Constant integer input (axes, pads, shape...).
    pub fn const_ints(&self, i: usize) -> Option<Vec<i64>> {
        self.opt_input(i)?.ints()
    }
    /// All inputs that are present have constant values.
    pub fn all_const(&self) -> bool {
        self.eval && self.inputs.iter().flatten().all(|f| f.value.is_some())
    }
    pub fn value(&self, i: usize) -> Option<super::Arr> {
        self.opt_input(i)?.value.as_ref()?.to_arr()
    }
    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.node.attr_i(name).unwrap_or(default)
    }
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node.attr_ints(name).map(|v| v.to_vec())
    }
    pub fn n_outputs(&self) -> usize {
        self.node.outputs.len()
    }
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let x = if a < 0 { a.saturating_add(r) } else { a };
    if x < 0 || x >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(x as usize)
}

/// Converts the result of i128 dimension arithmetic back, failing instead of overflowing.
pub fn dim_i64(v: i128) -> OpResult<i64> {
    i64::try_from(v).map_err(|_| "dimension arithmetic overflows".to_string())
}

/// Checked product of known dims.
pub fn product_i64(d: &[i64]) -> OpResult<i64> {
    d.iter()
        .try_fold(1i64, |a, &x| a.checked_mul(x))
        .ok_or_else(|| "dimension product overflows".to_string())
}

/// Numpy-style broadcasting of two shapes.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> OpResult<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = if i + a.len() >= n {
            &a[i + a.len() - n]
        } else {
            &Dim::Known(1)
        };
        let y = if i + b.len() >= n {
            &b[i + b.len() - n]
        } else {
            &Dim::Known(1)
        };
        out.push(match (x, y) {
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
            (Dim::Known(p), Dim::Known(q)) if p == q => Dim::Known(*p),
            (Dim::Known(p), Dim::Known(q)) => return Err(format!("cannot broadcast {p} with {q}")),
            (Dim::Sym(p), Dim::Sym(q)) if p == q => Dim::Sym(p.clone()),
            (Dim::Known(p), _) | (_, Dim::Known(p)) => Dim::Known(*p),
            _ => Dim::Unknown,
        });
    }
    Ok(out)
}

/// Product of dims when all are known.
pub fn numel(s: &[Dim]) -> Option<i64> {
    s.iter().try_fold(1i64, |a, d| match d {
        Dim::Known(v) => a.checked_mul(*v),
        _ => None,
    })
}

/// Upper bound on elements a folded constant may have (bigger results stay as nodes).
pub const MAX_FOLD_ELEMS: i64 = 1 << 22;

pub trait Op: Sync {
    /// Facts for each output of the node (same length as `node.outputs`).
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>>;
    /// Multiply-accumulates of this node, given the inferred facts.
    fn macs(&self, _cx: &InferCx, _outputs: &[Fact]) -> OpResult<u64> {
        Ok(0)
    }
    /// For an op with a weight (input 1): which of the weight's axes hold the output and the
    /// input channels. `None` for every other op. The only place that decides it.
    fn weight_layout(&self, _node: &Node) -> Option<WeightLayout> {
        None
    }
}

/// Which op with a weight a node is, with the attributes that change the weight's meaning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Linear {
    /// W [Cout, Cin/group, k...].
    Conv,
    /// W [Cin, Cout/group, k...].
    ConvTranspose,
    /// B [K, N], or [N, K] with `trans_b`; Y = alpha·A·B + beta·C.
    Gemm {
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
    },
    /// B [K, N] (a 2-D B is the only one the channel analysis accepts).
    MatMul,
}

/// The layout of the weight (input [`WeightLayout::INPUT`]) of a Conv, ConvTranspose, Gemm or
/// MatMul: every pass that selects, zeroes or scores filters reads its axes from here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightLayout {
    pub kind: Linear,
    /// Weight axis indexing output channels (features).
    pub out_axis: usize,
    /// Weight axis indexing input channels (features).
    pub in_axis: usize,
    /// The `group` attribute as written (1 when absent; always 1 for Gemm and MatMul).
    pub group: i64,
}

impl WeightLayout {
    /// The weight is the node's input 1.
    pub const INPUT: usize = 1;
    /// Gemm and MatMul: a channel flattened into features covers several of them.
    pub fn is_dense(&self) -> bool {
        matches!(self.kind, Linear::Gemm { .. } | Linear::MatMul)
    }
}

/// The weight layout of a node, when it has a weight the tool understands.
pub fn weight_layout(node: &Node) -> Option<WeightLayout> {
    lookup(node)?.weight_layout(node)
}

/// The registry: every family's rows, for the default ONNX domain. An op not listed is unknown:
/// its shapes come from the file's declarations, and it blocks channels.
static FAMILIES: &[&[OpDef]] = &[
    conv::DEFS,
    gemm::DEFS,
    normalization::DEFS,
    elementwise::DEFS,
    binary::DEFS,
    pool::DEFS,
    pad::DEFS,
    resize::DEFS,
    concat::DEFS,
    split::DEFS,
    slice::DEFS,
    transpose::DEFS,
    reshape::DEFS,
    reduce::DEFS,
    shape::DEFS,
    gather::DEFS,
    constant_of_shape::DEFS,
    expand::DEFS,
    range::DEFS,
];

/// The registry row of a node's op, if the tool knows it.
pub fn def(node: &Node) -> Option<&'static OpDef> {
    if !node.is_standard() {
        return None;
    }
    FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .find(|d| d.name == node.op_type)
}

/// The implementation for a node, if the tool knows its op.
pub fn lookup(node: &Node) -> Option<&'static dyn Op> {
    def(node).map(|d| d.op)
}

/// Whether the op type is one the tool understands (for `inspect` reporting).
pub fn is_known(node: &Node) -> bool {
    lookup(node).is_some()
}

pub use concat::concat_piece;
pub use resize::sizes_follow_input;

/// Every registry row.
pub fn defs() -> impl Iterator<Item = &'static OpDef> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// The op types the registry knows.
pub fn known_ops() -> impl Iterator<Item = &'static str> {
    defs().map(|d| d.name)
}

/// Reshape target resolution (exposed for tests).
pub fn reshape_target_for_tests(input: &[Dim], target: &[Dim]) -> OpResult<Vec<Dim>> {
    reshape::reshape_target(input, target, false)
}

/// Clamped slice (start, end, length) for one axis (ONNX Slice semantics).
pub fn slice_clamp(start: i64, end: i64, step: i64, dim: i64) -> (i64, i64, i64) {
    slice::clamp(start, end, step, dim)
}
