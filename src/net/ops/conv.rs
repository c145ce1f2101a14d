//! Convolutions.
//! - Conv: <https://onnx.ai/onnx/operators/onnx__Conv.html> (opset 1, 11: same semantics here)
//! - ConvTranspose: <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>
//!
//! 1-D convolutions run as 2-D ones over a unit height; groups, dilations, strides, explicit
//! (also asymmetric) pads and `auto_pad` are supported. 3-D convolutions are not.

use super::Entry;
use super::{one, spatial_pads, usizes, BurnOp, OpResult};
use crate::net::fastconv::{conv2d, conv2d_relu};
use crate::net::{Dt, Fx, Val};
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

pub struct Conv;
pub struct ConvTranspose;

/// Lifts a 1-D (rank-3) input or weight to 2-D by inserting a unit height.
fn as2d(d: Dt) -> OpResult<(burn::prelude::Tensor<4>, bool)> {
    match d.rank {
        4 => Ok((d.to4()?, false)),
        3 => {
            let s = d.dims();
            Ok((d.reshape(&[s[0], s[1], 1, s[2]])?.to4()?, true))
        }
        r => Err(format!(
            "only 1-D and 2-D convolutions are supported (rank {r})"
        )),
    }
}

fn back(t: burn::prelude::Tensor<4>, one_d: bool) -> OpResult<Dt> {
    let d = Dt::from4(t);
    if one_d {
        let s = d.dims();
        d.reshape(&[s[0], s[1], s[3]])
    } else {
        Ok(d)
    }
}

impl BurnOp for Conv {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn fuses_relu(&self, _node: &crate::ir::Node) -> bool {
        true
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let (x, one_d) = as2d(cx.f(ins, 0)?)?;
        let (w, _) = as2d(cx.f(ins, 1)?)?;
        let b = cx.opt_f(ins, 2)?.map(|b| b.to1()).transpose()?;
        let n = if one_d { 1 } else { 2 };
        let xd = x.dims();
        let wd = w.dims();
        let strides = usizes(cx, "strides", n, 1)?;
        let dil = usizes(cx, "dilations", n, 1)?;
        let (strides, dil) = if one_d {
            ([1, strides[0]], [1, dil[0]])
        } else {
            ([strides[0], strides[1]], [dil[0], dil[1]])
        };
        let kernel = [wd[2], wd[3]];
        let pads = if one_d {
            let p = spatial_pads(cx, &[xd[3]], &[kernel[1]], &[strides[1]], &[dil[1]])?;
            [(0, 0), p[0]]
        } else {
            let p = spatial_pads(cx, &xd[2..], &kernel, &strides, &dil)?;
            [p[0], p[1]]
        };
        let groups = cx.attr_i("group", 1);
        if groups < 1 || xd[1] as i64 % groups != 0 || wd[1] * groups as usize != xd[1] {
            return Err(format!(
                "group {groups} does not fit input channels {} and weight {:?}",
                xd[1], wd
            ));
        }
        let opts = ConvOptions::new_with_padding(strides, pads, dil, groups as usize);
        let y = if cx.relu {
            conv2d_relu(x, w, b, opts)
        } else {
            conv2d(x, w, b, opts)
        };
        one(back(y, one_d)?)
    }
}

impl BurnOp for ConvTranspose {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let (x, one_d) = as2d(cx.f(ins, 0)?)?;
        let (w, _) = as2d(cx.f(ins, 1)?)?;
        let b = cx.opt_f(ins, 2)?.map(|b| b.to1()).transpose()?;
        let n = if one_d { 1 } else { 2 };
        let lift = |v: Vec<usize>, d: usize| -> [usize; 2] {
            if one_d {
                [d, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let strides = lift(usizes(cx, "strides", n, 1)?, 1);
        let dil = lift(usizes(cx, "dilations", n, 1)?, 1);
        let out_pad = match cx.attr_ints("output_padding") {
            None => [0, 0],
            Some(v) if v.len() == n && v.iter().all(|&p| p >= 0) => {
                lift(v.iter().map(|&p| p as usize).collect(), 0)
            }
            Some(v) => return Err(format!("output_padding {v:?} does not fit")),
        };
        let groups = cx.attr_i("group", 1).max(1) as usize;
        let xd = x.dims();
        let wd = w.dims();
        // Full output (no padding), then crop the pads.
        let full: Vec<usize> = (0..2)
            .map(|i| (xd[2 + i] - 1) * strides[i] + (wd[2 + i] - 1) * dil[i] + 1 + out_pad[i])
            .collect();
        let pads: [(usize, usize); 2] = if let Some(shape) = cx.attr_ints("output_shape") {
            let want = lift(shape.iter().map(|&v| v.max(0) as usize).collect(), 1);
            let upper = cx.attr_s("auto_pad", "NOTSET") != "SAME_LOWER";
            let mut p = [(0, 0); 2];
            for i in 0..2 {
                let total = full[i]
                    .checked_sub(want[i])
                    .ok_or_else(|| format!("output_shape {shape:?} is larger than possible"))?;
                p[i] = if upper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
            }
            p
        } else if matches!(
            cx.attr_s("auto_pad", "NOTSET").as_str(),
            "SAME_UPPER" | "SAME_LOWER"
        ) {
            let upper = cx.attr_s("auto_pad", "NOTSET") == "SAME_UPPER";
            let mut p = [(0, 0); 2];
            for i in 0..2 {
                let total = full[i].saturating_sub(xd[2 + i] * strides[i]);
                p[i] = if upper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
            }
            p
        } else {
            let pv = match cx.attr_ints("pads") {
                None => vec![0; 2 * n],
                Some(v) if v.len() == 2 * n && v.iter().all(|&p| p >= 0) => v,
                Some(v) => return Err(format!("pads {v:?} do not fit")),
            };
            if one_d {
                [(0, 0), (pv[0] as usize, pv[1] as usize)]
            } else {
                [
                    (pv[0] as usize, pv[2] as usize),
                    (pv[1] as usize, pv[3] as usize),
                ]
            }
        };
        let opts = ConvTransposeOptions::new(strides, [0, 0], out_pad, dil, groups);
        let y = conv_transpose2d(x, w, b, opts);
        let yd = y.dims();
        let y = y.slice([
            0..yd[0],
            0..yd[1],
            pads[0].0..yd[2] - pads[0].1,
            pads[1].0..yd[3] - pads[1].1,
        ]);
        one(back(y, one_d)?)
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[("Conv", &Conv), ("ConvTranspose", &ConvTranspose)];
