//! Broadcasting arithmetic: <https://onnx.ai/onnx/operators/onnx__Add.html>, Sub, Mul, Div, Pow
//! (exponent a constant scalar or a tensor), Max, Min, Sum, Mean (variadic). Numpy broadcasting
//! is burn's same-rank broadcasting on the rank-6 representation.

use super::Entry;
use super::{one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};

pub struct Binary;

impl BurnOp for Binary {
    fn fuses_relu(&self, node: &crate::ir::Node) -> bool {
        node.op_type == crate::ir::ops::names::ADD
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let op = cx.node.op_type.as_str();
        if cx.relu && op == "Add" && ins.len() == 2 {
            // The residual block's end, Relu(a + b), in one pass.
            let (a, b) = (cx.f(ins, 0)?, cx.f(ins, 1)?);
            let r = a.rank.max(b.rank);
            return one(Dt::new(crate::net::fastew::add_relu(a.t, b.t), r));
        }
        let y = self.plain(cx, ins)?;
        if cx.relu {
            let Some(Val::F(d)) = y.into_iter().next() else {
                return Err("no output to apply Relu to".into());
            };
            return one(Dt::new(crate::net::fastew::relu(d.t), d.rank));
        }
        Ok(y)
    }
}

impl Binary {
    /// The op without a fused Relu.
    fn plain(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let op = cx.node.op_type.as_str();
        if op == "Pow" {
            let x = cx.f(ins, 0)?;
            if let Some(Val::H(e)) = ins.get(1).and_then(|v| v.as_ref()) {
                if e.numel() == 1 {
                    let v = e
                        .to_arr()
                        .and_then(|a| a.to_f32_vec())
                        .and_then(|v| v.first().copied())
                        .ok_or("exponent is not numeric")?;
                    return one(Dt::new(x.t.powf_scalar(v), x.rank));
                }
            }
            let e = cx.f(ins, 1)?;
            let r = x.rank.max(e.rank);
            return one(Dt::new(x.t.powf(e.t), r));
        }
        let n = ins.iter().filter(|v| v.is_some()).count();
        if n == 0 {
            return Err("no inputs".into());
        }
        let mut acc = cx.f(ins, 0)?;
        for i in 1..ins.len() {
            let Some(b) = cx.opt_f(ins, i)? else { continue };
            let r = acc.rank.max(b.rank);
            let t = match op {
                "Add" | "Sum" | "Mean" => crate::net::fastew::add(acc.t, b.t),
                "Sub" => acc.t - b.t,
                "Mul" => acc.t * b.t,
                "Div" => acc.t / b.t,
                "Max" => bcast_pair(acc.t, b.t, true),
                "Min" => bcast_pair(acc.t, b.t, false),
                other => return Err(format!("{other} has no burn implementation")),
            };
            acc = Dt::new(t, r);
        }
        if op == "Mean" && n > 1 {
            acc = Dt::new(acc.t / n as f64, acc.rank);
        }
        one(acc)
    }
}

/// Element-wise max/min with broadcasting (expanded to a common shape first).
fn bcast_pair(
    a: burn::prelude::Tensor<6>,
    b: burn::prelude::Tensor<6>,
    max: bool,
) -> burn::prelude::Tensor<6> {
    let (da, db) = (a.dims(), b.dims());
    let shape: [usize; 6] = std::array::from_fn(|i| da[i].max(db[i]));
    let (a, b) = (a.expand(shape), b.expand(shape));
    if max {
        a.max_pair(b)
    } else {
        a.min_pair(b)
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("Add", &Binary),
    ("Sub", &Binary),
    ("Mul", &Binary),
    ("Div", &Binary),
    ("Pow", &Binary),
    ("Max", &Binary),
    ("Min", &Binary),
    ("Sum", &Binary),
    ("Mean", &Binary),
];
