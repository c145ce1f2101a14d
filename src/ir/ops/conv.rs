//! Convolutions.
//! - <https://onnx.ai/onnx/operators/onnx__Conv.html> (opset 1/11/22): X [N,C,D1..Dn],
//!   W [M, C/group, k1..kn]; attributes auto_pad, dilations, group, kernel_shape, pads, strides.
//! - <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>: W [C, M/group, k1..kn];
//!   output_shape / output_padding.
//!
//! MACs (the rule `--target-flops` counts): Conv N·Cout·∏Dout·(Cin/group)·∏k;
//! ConvTranspose N·Cin·∏Din·(Cout/group)·∏k.

use super::{Channels, Fact, InferCx, Linear, Op, OpDef, OpResult, WeightLayout};
use crate::ir::Dim;
use crate::ir::Node;

pub(super) struct Geometry {
    pub kernel: Vec<i64>,
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    pub pads: Vec<i64>,
    pub auto_pad: String,
}

pub(super) fn geometry(
    cx: &InferCx,
    spatial: usize,
    kernel_from_w: Option<Vec<i64>>,
) -> OpResult<Geometry> {
    let kernel = match cx.attr_ints("kernel_shape").or(kernel_from_w) {
        Some(k) => k,
        None => return Err("kernel shape is unknown".into()),
    };
    let get = |name: &str, n: usize, d: i64| -> OpResult<Vec<i64>> {
        match cx.attr_ints(name) {
            Some(v) if v.len() == n => Ok(v),
            Some(v) => Err(format!(
                "attribute {name} has {} values, expected {n}",
                v.len()
            )),
            None => Ok(vec![d; n]),
        }
    };
    if kernel.len() != spatial {
        return Err(format!(
            "kernel has {} dims but the input has {spatial} spatial dims",
            kernel.len()
        ));
    }
    let g = Geometry {
        strides: get("strides", spatial, 1)?,
        dilations: get("dilations", spatial, 1)?,
        pads: get("pads", 2 * spatial, 0)?,
        auto_pad: cx.node.attr_s("auto_pad").unwrap_or("NOTSET").to_string(),
        kernel,
    };
    if g.strides.iter().chain(&g.dilations).any(|&v| v <= 0) || g.kernel.iter().any(|&k| k <= 0) {
        return Err("strides, dilations and kernel sizes must be positive".into());
    }
    Ok(g)
}

/// Output length of one sliding-window axis.
pub(super) fn window_out(input: &Dim, g: &Geometry, i: usize, ceil_mode: bool) -> OpResult<Dim> {
    let Dim::Known(n) = *input else {
        return Ok(Dim::Unknown);
    };
    // i128: attributes and dims come from the file and may be absurd; never overflow.
    let n = n as i128;
    let n_sp = g.kernel.len();
    let eff = (g.kernel[i] as i128 - 1) * g.dilations[i] as i128 + 1;
    let s = g.strides[i] as i128;
    let (p0, p1) = (g.pads[i] as i128, g.pads[i + n_sp] as i128);
    let out = match g.auto_pad.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => (n + s - 1) / s,
        "VALID" => (n - eff + s) / s,
        "NOTSET" | "" => {
            let total = n + p0 + p1 - eff;
            if total < 0 {
                return Err(format!(
                    "window {eff} is larger than padded input {}",
                    n + p0 + p1
                ));
            }
            if ceil_mode {
                let mut o = (total + s - 1) / s + 1;
                // The last window must start inside the input or left padding.
                if (o - 1) * s >= n + p0 {
                    o -= 1;
                }
                o
            } else {
                total / s + 1
            }
        }
        other => return Err(format!("unknown auto_pad '{other}'")),
    };
    if out <= 0 {
        return Err(format!("output length {out} is not positive"));
    }
    Ok(Dim::Known(super::dim_i64(out)?))
}

pub struct Conv;
impl Op for Conv {
    fn weight_layout(&self, node: &Node) -> Option<WeightLayout> {
        Some(WeightLayout {
            kind: Linear::Conv,
            out_axis: 0,
            in_axis: 1,
            group: node.attr_i("group").unwrap_or(1),
        })
    }
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let w = cx.shape(1)?;
        if x.len() < 3 || w.len() != x.len() {
            return Err(format!(
                "input rank {} and weight rank {} do not fit a convolution",
                x.len(),
                w.len()
            ));
        }
        let sp = x.len() - 2;
        let wk = super::concrete(&w[2..]);
        let g = geometry(cx, sp, wk)?;
        let group = cx.attr_i("group", 1);
        if let (Dim::Known(c), Dim::Known(wc)) = (&x[1], &w[1]) {
            if group <= 0 || Some(*c) != wc.checked_mul(group) {
                return Err(format!(
                    "input has {c} channels but weight expects {wc}×group {group}"
                ));
            }
        }
        let mut out = vec![x[0].clone(), w[0].clone()];
        for i in 0..sp {
            out.push(window_out(&x[2 + i], &g, i, false)?);
        }
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
    fn macs(&self, cx: &InferCx, outputs: &[Fact]) -> OpResult<u64> {
        let y = outputs[0]
            .concrete()
            .ok_or("output shape is not fully known")?;
        let w = cx.input(1)?.concrete().ok_or("weight shape is not known")?;
        // N·Cout·∏out · (Cin/group)·∏k  ==  ∏y · ∏w[1..]
        let a = super::product_i64(&y)?;
        let b = super::product_i64(&w[1..])?;
        a.checked_mul(b)
            .map(|v| v.max(0) as u64)
            .ok_or_else(|| "MAC count overflows".into())
    }
}

pub struct ConvTranspose;
impl Op for ConvTranspose {
    fn weight_layout(&self, node: &Node) -> Option<WeightLayout> {
        Some(WeightLayout {
            kind: Linear::ConvTranspose,
            out_axis: 1,
            in_axis: 0,
            group: node.attr_i("group").unwrap_or(1),
        })
    }
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let x = cx.shape(0)?;
        let w = cx.shape(1)?;
        if x.len() < 3 || w.len() != x.len() {
            return Err(format!(
                "input rank {} and weight rank {} do not fit a transposed convolution",
                x.len(),
                w.len()
            ));
        }
        let sp = x.len() - 2;
        let g = geometry(cx, sp, super::concrete(&w[2..]))?;
        let group = cx.attr_i("group", 1);
        let cout = match &w[1] {
            Dim::Known(m) => Dim::Known(m.checked_mul(group).ok_or("channel count overflows")?),
            _ => Dim::Unknown,
        };
        let out_pad = cx.attr_ints("output_padding").unwrap_or(vec![0; sp]);
        let explicit = cx.attr_ints("output_shape");
        let mut out = vec![x[0].clone(), cout];
        for i in 0..sp {
            if let Some(os) = &explicit {
                let os = &os[os.len().saturating_sub(sp)..];
                out.push(Dim::Known(*os.get(i).ok_or("output_shape too short")?));
                continue;
            }
            let Dim::Known(n) = x[2 + i] else {
                out.push(Dim::Unknown);
                continue;
            };
            let (n, s) = (n as i128, g.strides[i] as i128);
            let eff = (g.kernel[i] as i128 - 1) * g.dilations[i] as i128 + 1;
            let o = match g.auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => n * s,
                _ => {
                    s * (n - 1) + out_pad.get(i).copied().unwrap_or(0) as i128 + eff
                        - g.pads[i] as i128
                        - g.pads[i + sp] as i128
                }
            };
            if o <= 0 {
                return Err(format!("output length {o} is not positive"));
            }
            out.push(Dim::Known(super::dim_i64(o)?));
        }
        Ok(vec![Fact::new(cx.dtype(0), Some(out))])
    }
    fn macs(&self, cx: &InferCx, _outputs: &[Fact]) -> OpResult<u64> {
        let x = cx
            .input(0)?
            .concrete()
            .ok_or("input shape is not fully known")?;
        let w = cx.input(1)?.concrete().ok_or("weight shape is not known")?;
        // N·Cin·∏in · (Cout/group)·∏k  ==  ∏x · ∏w[1..]
        let a = super::product_i64(&x)?;
        let b = super::product_i64(&w[1..])?;
        a.checked_mul(b)
            .map(|v| v.max(0) as u64)
            .ok_or_else(|| "MAC count overflows".into())
    }
}

/// Op types other passes name (when they build or recognise such nodes).
pub const CONV: &str = "Conv";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(CONV, &Conv).channels(Channels::Conv),
    OpDef::new("ConvTranspose", &ConvTranspose).channels(Channels::ConvTranspose),
];
