//! ReLU and same-shape Add on burn's CPU backend `flex`, on every rayon thread.
//!
//! burn 0.22's `flex` runs element-wise ops (`relu`, `relu_backward`, `add`) on the calling
//! thread, so in a 2-thread training step the other core idled through each of them: on
//! resnet20 they were ~12% of the step's CPU samples, all of it serial (issue #20). Here they are
//! a backend extension (`flex` and autodiff over `flex`) like [`super::fastconv`]: the forward
//! pass and ReLU's backward split the elements into one contiguous chunk per thread, and Add's
//! backward hands the output gradient to both inputs, as burn's does.
//!
//! [`relu`] and [`add`] take `f32` tensors on `flex` (Add when both shapes are equal) and fall
//! back to burn's ops otherwise. The results are exactly burn's (the same element-wise
//! expressions; NaN propagates through ReLU and keeps its gradient, as burn's `flex` does).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::tensor::activation;
use burn::tensor::{DType, Tensor};

type FlexTensor = FloatTensor<Flex>;

/// The extension: ReLU, and Add of two tensors of one shape.
#[backend_extension(Flex, Autodiff)]
pub trait FastEw: Backend {
    fn fast_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn fast_add(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// ReLU of `a + b` in one pass (the residual block's end).
    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

use super::fastconv::elementwise::{map, relu_grad, zip_map};

use super::fastconv::{slice as host, tensor};

/// `v` as a tensor of `t`'s shape.
fn like(t: &FlexTensor, v: Vec<f32>) -> FlexTensor {
    tensor(v, t.layout().shape().to_vec())
}

use super::fastconv::kernels::relu as relu_f;

impl FastEw for Flex {
    fn fast_relu(x: FlexTensor) -> FlexTensor {
        let xs = host(&x);
        like(&x, map(&xs, relu_f))
    }

    fn fast_add(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let y = zip_map(&host(&a), &host(&b), |u, v| u + v);
        like(&a, y)
    }

    fn fast_add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let y = zip_map(&host(&a), &host(&b), |u, v| relu_f(u + v));
        like(&a, y)
    }
}

/// Hands `d` to both parents of a two-input op (as burn's Add does).
fn to_both(parents: [Option<NodeId>; 2], d: FlexTensor, grads: &mut Gradients) {
    match parents {
        [Some(a), Some(b)] => {
            grads.register::<Flex>(a, d.clone());
            grads.register::<Flex>(b, d);
        }
        [Some(a), None] => grads.register::<Flex>(a, d),
        [None, Some(b)] => grads.register::<Flex>(b, d),
        [None, None] => {}
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl Backward<Flex, 2> for AddReluBackward {
    /// The output: the gradient passes to both inputs where it is positive (or NaN).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let d = relu_grad(&host(&ops.state), &host(&dy));
        let d = like(&dy, d);
        to_both(ops.parents.map(|p| p.map(|n| n.id)), d, grads);
    }
}

#[derive(Debug)]
struct ReluBackward;

impl Backward<Flex, 1> for ReluBackward {
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let x = cp.retrieve_node_output::<FlexTensor>(ops.state);
        if let Some(node) = parent {
            // The gradient passes where the input was positive (or NaN), as burn's
            // `relu_backward` (ReLU keeps the sign, so input and output agree on it).
            let dx = relu_grad(&host(&x), &host(&dy));
            let d = like(&dy, dx);
            grads.register::<Flex>(node.id, d);
        }
    }
}

#[derive(Debug)]
struct AddBackward;

impl Backward<Flex, 2> for AddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        to_both(ops.parents.map(|p| p.map(|n| n.id)), dy, grads);
    }
}

impl<C: CheckpointStrategy> FastEw for Autodiff<Flex, C> {
    fn fast_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                prep.finish(xs, Flex::fast_relu(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fast_relu(x.primitive().clone())),
        }
    }

    fn fast_add(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = Flex::fast_add(a.primitive().clone(), b.primitive().clone());
        match AddBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = Flex::fast_add_relu(a.primitive().clone(), b.primitive().clone());
        match AddReluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

fn on_flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32 && super::fastconv::on_flex(&t.device())
}

/// burn's `relu`, through [`FastEw`] where it applies (see the module doc).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex_f32(&x) || !super::fastconv::enabled() {
        return activation::relu(x);
    }
    Tensor::from_dispatch(<Dispatch as FastEw>::fast_relu(x.into_dispatch()))
}

/// `a + b` (burn's broadcasting), through [`FastEw`] when both have one shape (see the module
/// doc).
pub fn add<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if a.dims() != b.dims()
        || !on_flex_f32(&a)
        || b.dtype() != DType::F32
        || !super::fastconv::enabled()
    {
        return a + b;
    }
    Tensor::from_dispatch(<Dispatch as FastEw>::fast_add(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// ONNX's Relu of `a + b`, in one pass through [`FastEw`] when both have one shape.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if a.dims() != b.dims()
        || !on_flex_f32(&a)
        || b.dtype() != DType::F32
        || !super::fastconv::enabled()
    {
        return relu(a + b);
    }
    Tensor::from_dispatch(<Dispatch as FastEw>::fast_add_relu(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::TensorData;

    /// Through autodiff on `flex`: outputs and gradients equal burn's ops exactly (also at
    /// zeros, a NaN, and on tensors below and above the per-thread chunk size).
    #[test]
    fn relu_and_add_equal_burns_through_autodiff() {
        let dev = burn::tensor::Device::flex().autodiff();
        for n in [7usize, 40_000] {
            let mut v: Vec<f32> = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &dev)
                .to_data()
                .try_to_vec()
                .unwrap();
            v[0] = 0.0;
            v[3] = f32::NAN;
            let x0 = Tensor::<2>::from_data(TensorData::new(v, [1, n]), &dev);
            let b0 = Tensor::<2>::random([1, n], Distribution::Normal(0.0, 1.0), &dev);
            let run = |fast: bool| {
                let x = x0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                let y = if fast {
                    add(relu(x.clone()), b.clone())
                } else {
                    activation::relu(x.clone()) + b.clone()
                };
                let r = y.clone().cos().detach();
                let grads = (y.clone() * r).sum().backward();
                let g = |t: Tensor<2>| t.to_data().try_to_vec::<f32>().unwrap();
                (g(y), g(x.grad(&grads).unwrap()), g(b.grad(&grads).unwrap()))
            };
            let (a, b) = (run(true), run(false));
            let same = |p: &[f32], q: &[f32]| {
                p.len() == q.len()
                    && p.iter()
                        .zip(q)
                        .all(|(u, v)| u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()))
            };
            assert!(same(&a.0, &b.0), "n {n}: outputs differ");
            assert!(same(&a.1, &b.1), "n {n}: ReLU's input gradients differ");
            assert!(same(&a.2, &b.2), "n {n}: Add's input gradients differ");
        }
    }
}
