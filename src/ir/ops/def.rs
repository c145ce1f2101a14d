//! A registry row: what the tool knows about one op type, declared once in its family's file
//! (`DEFS`). Shape inference, constant evaluation, MACs and the weight layout are methods of the
//! [`Op`] implementation; how channels flow through the op and what it does to a zero channel
//! are the two descriptors below, read by the channel analysis (`analysis::channels::rules`),
//! the surgery (`rewrite::prune`) and the dead-channel proof (`search::shrink`).

use super::Op;

/// How an op relates the channels of its inputs and outputs: which transfer rule the channel
/// analysis applies and which surgery cuts the node. [`Channels::Blocks`], the default, stops
/// channels: every group reaching the op is declined, never wrongly cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// Unknown to the channel analysis: inputs blocked.
    Blocks,
    /// Output channel c depends on input channel c alone, with no per-channel parameter
    /// (activations, pooling, Identity, Cast): no surgery.
    Passthrough,
    /// Broadcasting arithmetic: operands' channels are joined; per-channel constant operands
    /// are sliced.
    Elementwise,
    /// A per-channel parameter vector in every input after the first (BatchNormalization,
    /// InstanceNormalization): the vectors are sliced.
    PerChannelParams,
    /// Weight [Cout, Cin/group, k…]: produces output channels, consumes input channels
    /// (depthwise joins them); the weight and bias are sliced.
    Conv,
    /// Weight [Cin, Cout/group, k…]; only group 1 is traced.
    ConvTranspose,
    /// Y = A·B' + C with a constant B and C.
    Gemm,
    /// A·B with a constant 2-D B.
    MatMul,
    /// Whole normalisation groups are atoms; `num_groups`, scale and bias are cut.
    GroupNorm,
    /// Passes channels through when normalising over space only; declined over channels.
    LayerNorm,
    /// Channels pass through; a constant `sizes` is rewritten to the kept count.
    Resize,
    /// The output's channel axis is the inputs' spaces side by side.
    Concat,
    /// A channel slice maps kept channels; its constant starts/ends are rewritten.
    Slice,
    /// Channel splits: each output is a range of the input's slots; `split` is rewritten.
    Split,
    /// Channel padding adds blocked slots; pads are kept.
    Pad,
    /// Channels spread over flattened features.
    Flatten,
    /// Flattens, splits or merges around the channel axis; its constant shape is rewritten.
    Reshape,
    /// Adds or removes axes other than the channel axis.
    SqueezeUnsqueeze,
    /// Moves the channel axis (and channel shuffles: split → Transpose → merge).
    Transpose,
    /// Reads only the shape: the channel count it reports is followed.
    Shape,
    /// Reductions over axes other than the channel axis pass channels through.
    Reduce,
}

/// What the op does to a channel that is zero everywhere, for `shrink`'s proof that a channel
/// is dead. Ops with a weight are judged from their [`super::WeightLayout`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zeros {
    /// Assumed non-zero.
    Unknown,
    /// f(0) = 0 channel by channel (ReLU, pooling, Resize, Transpose...).
    Preserves,
    /// BatchNormalization / InstanceNormalization: zero when γ = β = 0, or (BatchNorm, from a
    /// zero input) when β − γ·μ/√(var+ε) = 0.
    Norm,
    /// Zero stays zero when the clip range contains 0.
    Clip,
    /// Flatten/Reshape: each channel's flag spreads over its features.
    Spread,
    /// Add, Sub, Sum, Max, Min: zero where every operand is zero.
    AllOperands,
    /// Mul: zero where any operand is zero.
    AnyOperand,
    /// Div: zero where the numerator is zero.
    Numerator,
    /// Concat: the inputs' flags side by side.
    Concat,
    /// Channel padding: padded channels are zero when the pad value is.
    Pad,
}

/// One registry row.
#[derive(Clone, Copy)]
pub struct OpDef {
    /// The op type in the default ONNX domain.
    pub name: &'static str,
    pub op: &'static dyn Op,
    pub channels: Channels,
    pub zeros: Zeros,
}

impl OpDef {
    /// A row that blocks channels and assumes zeros are not preserved.
    pub const fn new(name: &'static str, op: &'static dyn Op) -> OpDef {
        OpDef {
            name,
            op,
            channels: Channels::Blocks,
            zeros: Zeros::Unknown,
        }
    }
    pub const fn channels(mut self, c: Channels) -> OpDef {
        self.channels = c;
        self
    }
    pub const fn zeros(mut self, z: Zeros) -> OpDef {
        self.zeros = z;
        self
    }
}
