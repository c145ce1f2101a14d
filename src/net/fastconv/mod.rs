//! A 2-D convolution for burn's CPU backend `flex`, with its own backward pass.
//!
//! burn 0.22's `flex` has no convolution backward of its own: burn's default computes the weight
//! gradient as a convolution of the input with the output gradient (batch and channel axes
//! swapped, so every step copies both into new layouts) and the input gradient as a transposed
//! convolution; a profile of fine-tuning put ~50% of a step in those copies, im2col and col2im
//! (docs/benchmarks.md, "Training speed"). Here the three passes run without layout copies
//! ([`kernels`]: [`direct`] register-blocked kernels for stride-1 3×3 convolutions on x86-64,
//! else one im2col per image and one matrix product each), registered with burn as a backend
//! extension (`flex` and autodiff over `flex`) whose backward is written by hand.
//!
//! [`conv2d`] takes it for `f32` tensors on `flex` with one group and falls back to burn's
//! `conv2d` for everything else (grouped and depthwise convolutions, other backends and dtypes),
//! so a network's result does not depend on which path ran beyond float rounding.
//! [`conv2d_relu`] also applies the Relu that follows (in the pass that writes the output; its
//! gradient masks the output gradient before the backward kernels).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod direct;
pub mod direct_grad;
pub(crate) mod elementwise;
pub mod kernels;
pub(crate) mod simd;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, DispatchDevice, Flex};
use burn::tensor::module;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, Tensor, TensorData};
use kernels::Geom;

type FlexTensor = FloatTensor<Flex>;

/// The extension: a one-group `f32` convolution whose geometry is already resolved, followed
/// by ONNX's Relu when `relu`; `b` is the bias, or an empty tensor for none.
#[backend_extension(Flex, Autodiff)]
pub trait FastConv: Backend {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        geom: Geom,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// A float tensor's elements (borrowed when contiguous).
pub(crate) fn slice(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
    }
}

/// A `flex` tensor of `dims` holding `v`.
pub(crate) fn tensor(v: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, Shape::from(dims)))
}

impl FastConv for Flex {
    fn fast_conv2d(x: FlexTensor, w: FlexTensor, b: FlexTensor, g: Geom, relu: bool) -> FlexTensor {
        let (xs, ws, bs) = (slice(&x), slice(&w), slice(&b));
        // An empty bias stands for none (the extension's signature takes a tensor).
        let y = kernels::forward(&g, &xs, &ws, Some(&*bs).filter(|b| !b.is_empty()), relu);
        tensor(y, vec![g.n, g.o, g.oh, g.ow])
    }
}

#[derive(Debug)]
struct FastConvBackward;

impl Backward<Flex, 3> for FastConvBackward {
    /// Input and weight, the geometry, and the output when a ReLU followed (its gradient
    /// passes where the output is positive).
    type State = (NodeId, NodeId, Geom, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (xs, ws, g, y) = ops.state;
        // Both retrieved, as burn's own convolution does, whichever gradients are wanted.
        let x = cp.retrieve_node_output::<FlexTensor>(xs);
        let w = cp.retrieve_node_output::<FlexTensor>(ws);
        let xv = (node_w.is_some() || node_b.is_some()).then(|| slice(&x));
        let keep = y.as_ref().map(slice);
        let grads_of = kernels::backward_masked(
            &g,
            xv.as_deref(),
            &slice(&w),
            &slice(&dy),
            keep.as_deref(),
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, grads_of.dx) {
            grads.register::<Flex>(node.id, tensor(dx, vec![g.n, g.c, g.h, g.w]));
        }
        if let Some((dw, db)) = grads_of.dw {
            if let Some(node) = node_w {
                grads.register::<Flex>(node.id, tensor(dw, vec![g.o, g.c, g.kh, g.kw]));
            }
            if let Some(node) = node_b {
                grads.register::<Flex>(node.id, tensor(db, vec![g.o]));
            }
        }
    }
}

impl<C: CheckpointStrategy> FastConv for Autodiff<Flex, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        g: Geom,
        relu: bool,
    ) -> FloatTensor<Self> {
        let y = Flex::fast_conv2d(
            x.primitive().clone(),
            w.primitive().clone(),
            b.primitive().clone(),
            g,
            relu,
        );
        match FastConvBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                let ws = prep.checkpoint(&w);
                prep.finish((xs, ws, g, relu.then(|| y.clone())), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

pub(crate) fn on_flex(d: &burn::tensor::Device) -> bool {
    matches!(d.as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

/// The geometry of a convolution [`conv2d`] can take, or `None`.
fn geom(xd: [usize; 4], wd: [usize; 4], o: &ConvOptions<2>) -> Option<Geom> {
    if o.groups != 1 || wd[1] != xd[1] {
        return None;
    }
    let out = |i: usize| -> Option<usize> {
        let span = o.dilation[i] * (wd[2 + i] - 1) + 1;
        let full = xd[2 + i] + o.padding[i].0 + o.padding[i].1;
        (full >= span && o.stride[i] > 0).then(|| (full - span) / o.stride[i] + 1)
    };
    Some(Geom {
        n: xd[0],
        c: xd[1],
        h: xd[2],
        w: xd[3],
        o: wd[0],
        kh: wd[2],
        kw: wd[3],
        sh: o.stride[0],
        sw: o.stride[1],
        dh: o.dilation[0],
        dw: o.dilation[1],
        pt: o.padding[0].0,
        pl: o.padding[1].0,
        oh: out(0)?,
        ow: out(1)?,
    })
}

/// Off with `ONNX_PRUNE_BURN_CONV=1` (burn's own convolution everywhere; for side-by-side
/// benchmarks), read once per process.
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("ONNX_PRUNE_BURN_CONV").is_none_or(|v| v != "1"))
}

/// burn's `conv2d`, through [`FastConv`] where it applies (see the module doc).
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>, opts: ConvOptions<2>) -> Tensor<4> {
    conv2d_then(x, w, b, opts, false)
}

/// ONNX's Relu of [`conv2d`], in one pass where [`FastConv`] applies (the ReLU is applied as
/// each output is written, and its gradient as the backward pass reads the output gradient).
pub fn conv2d_relu(
    x: Tensor<4>,
    w: Tensor<4>,
    b: Option<Tensor<1>>,
    opts: ConvOptions<2>,
) -> Tensor<4> {
    conv2d_then(x, w, b, opts, true)
}

fn conv2d_then(
    x: Tensor<4>,
    w: Tensor<4>,
    b: Option<Tensor<1>>,
    opts: ConvOptions<2>,
    relu: bool,
) -> Tensor<4> {
    let g = (on_flex(&x.device()) && x.dtype() == DType::F32 && w.dtype() == DType::F32)
        .then(|| geom(x.dims(), w.dims(), &opts))
        .flatten()
        .filter(|_| enabled());
    let Some(g) = g else {
        let y = module::conv2d(x, w, b, opts);
        return if relu { crate::net::fastew::relu(y) } else { y };
    };
    let b = b.unwrap_or_else(|| Tensor::zeros([0], &x.device()));
    let y = <Dispatch as FastConv>::fast_conv2d(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        g,
        relu,
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Through autodiff on `flex`: the output and the gradients of input, weight and bias equal
    /// burn's own `conv2d` (strided, dilated, asymmetrically padded, 1×1, with and without bias).
    #[test]
    fn matches_burns_conv_through_autodiff() {
        let dev = burn::tensor::Device::flex().autodiff();
        /// (input channels, height, output channels, stride, dilation, pads, bias)
        type Case = (
            usize,
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [(usize, usize); 2],
            bool,
        );
        let cases: [Case; 5] = [
            (3, 8, 4, [1, 1], [1, 1], [(1, 1), (1, 1)], true),
            (2, 9, 5, [2, 2], [1, 1], [(1, 1), (0, 1)], true),
            (4, 6, 3, [1, 1], [2, 2], [(2, 2), (2, 2)], false),
            (4, 5, 6, [1, 2], [1, 1], [(0, 2), (1, 0)], true),
            (5, 7, 3, [1, 1], [1, 1], [(0, 0), (0, 0)], false),
        ];
        for (i, (c, hw, o, stride, dil, pad, with_bias)) in cases.into_iter().enumerate() {
            let k = if i == 4 { 1 } else { 3 };
            let x0 = Tensor::<4>::random([2, c, hw, hw + 1], Distribution::Normal(0.0, 1.0), &dev);
            let w0 = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 1.0), &dev);
            let b0 = Tensor::<1>::random([o], Distribution::Normal(0.0, 1.0), &dev);
            let opts = ConvOptions {
                stride,
                padding: pad,
                dilation: dil,
                groups: 1,
            };
            assert!(on_flex(&dev) && geom(x0.dims(), w0.dims(), &opts).is_some());
            let run = |fast: bool| {
                let x = x0.clone().detach().require_grad();
                let w = w0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                let bias = with_bias.then(|| b.clone());
                let y = if fast {
                    conv2d(x.clone(), w.clone(), bias, opts.clone())
                } else {
                    module::conv2d(x.clone(), w.clone(), bias, opts.clone())
                };
                let r = y.clone().sin().detach();
                let grads = (y.clone() * r).sum().backward();
                let g = |t: &Tensor<1>| t.to_data().try_to_vec::<f32>().unwrap();
                (
                    g(&y.flatten(0, 3)),
                    g(&x.grad(&grads).unwrap().flatten(0, 3)),
                    g(&w.grad(&grads).unwrap().flatten(0, 3)),
                    with_bias.then(|| {
                        b.grad(&grads)
                            .unwrap()
                            .to_data()
                            .try_to_vec::<f32>()
                            .unwrap()
                    }),
                )
            };
            let (a, b) = (run(true), run(false));
            let close = |p: &[f32], q: &[f32], what: &str| {
                assert_eq!(p.len(), q.len(), "case {i} {what}");
                for (u, v) in p.iter().zip(q) {
                    assert!(
                        (u - v).abs() <= 1e-3 * (1.0 + v.abs()),
                        "case {i} {what}: {u} vs {v}"
                    );
                }
            };
            close(&a.0, &b.0, "output");
            close(&a.1, &b.1, "input gradient");
            close(&a.2, &b.2, "weight gradient");
            if let (Some(p), Some(q)) = (&a.3, &b.3) {
                close(p, q, "bias gradient");
            }
        }
    }
}
