//! Pooling.
//! - MaxPool: <https://onnx.ai/onnx/operators/onnx__MaxPool.html> (no Indices output)
//! - AveragePool: <https://onnx.ai/onnx/operators/onnx__AveragePool.html> (`count_include_pad`
//!   default 0, `ceil_mode`)
//! - GlobalAveragePool / GlobalMaxPool: <https://onnx.ai/onnx/operators/onnx__GlobalAveragePool.html>
//!
//! 1-D pools run as 2-D ones over a unit height.

use super::Entry;
use super::{one, spatial_pads, usizes, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};

pub struct Pool;
pub struct GlobalPool;

impl BurnOp for Pool {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        if cx.node.outputs.get(1).is_some_and(|o| o.is_some()) {
            return Err("MaxPool's Indices output is not supported".into());
        }
        let one_d = match x.rank {
            4 => false,
            3 => true,
            r => return Err(format!("only 1-D and 2-D pooling is supported (rank {r})")),
        };
        let n = if one_d { 1 } else { 2 };
        let dims = x.dims();
        let x4 = if one_d {
            x.reshape(&[dims[0], dims[1], 1, dims[2]])?.to4()?
        } else {
            x.to4()?
        };
        let k = usizes(cx, "kernel_shape", n, 0)?;
        if k.contains(&0) {
            return Err("kernel_shape is missing".into());
        }
        let s = usizes(cx, "strides", n, 1)?;
        let d = usizes(cx, "dilations", n, 1)?;
        let p = spatial_pads(cx, &dims[2..], &k, &s, &d)?;
        let two = |v: &[usize], fill: usize| -> [usize; 2] {
            if one_d {
                [fill, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let (k, s, d) = (two(&k, 1), two(&s, 1), two(&d, 1));
        let p = if one_d { [(0, 0), p[0]] } else { [p[0], p[1]] };
        let ceil = cx.attr_i("ceil_mode", 0) != 0;
        let y = if cx.node.op_type == "MaxPool" {
            let o = MaxPoolOptions::new(k)
                .with_stride(s)
                .with_padding_pairs(p)
                .with_dilation(d)
                .with_ceil_mode(ceil);
            max_pool2d(x4, o)
        } else {
            if d != [1, 1] {
                return Err("AveragePool with dilations is not supported".into());
            }
            let o = AvgPoolOptions::new(k)
                .with_stride(s)
                .with_padding_pairs(p)
                .with_count_include_pad(cx.attr_i("count_include_pad", 0) != 0)
                .with_ceil_mode(ceil);
            avg_pool2d(x4, o)
        };
        let y = Dt::from4(y);
        if one_d {
            let yd = y.dims();
            one(y.reshape(&[yd[0], yd[1], yd[3]])?)
        } else {
            one(y)
        }
    }
}

impl BurnOp for GlobalPool {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let r = x.rank;
        if r < 3 {
            return Err("global pooling needs spatial axes".into());
        }
        let mut t = x.t.clone();
        for a in 2..r {
            let p = x.ax(a);
            t = match cx.node.op_type.as_str() {
                "GlobalMaxPool" => t.max_dim(p),
                _ => t.mean_dim(p),
            };
        }
        one(Dt::new(t, r))
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[
    ("MaxPool", &Pool),
    ("AveragePool", &Pool),
    ("GlobalAveragePool", &GlobalPool),
    ("GlobalMaxPool", &GlobalPool),
];
