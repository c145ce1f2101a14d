//! Resize: <https://onnx.ai/onnx/operators/onnx__Resize.html> (opset 10: X, scales; 11+: X,
//! roi, scales, sizes) and Upsample (X, scales). Spatial axes of a 4-D input only. Supported:
//! `linear` with `half_pixel`/`pytorch_half_pixel` or `align_corners` coordinates (bilinear),
//! and `nearest` with `asymmetric` coordinates and `floor` rounding (what `Upsample` does).
//! Anything else is reported, not approximated.

use super::Entry;
use super::{one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

pub struct Resize;

impl BurnOp for Resize {
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let x = cx.f(ins, 0)?;
        let dims = x.dims();
        if dims.len() != 4 {
            return Err("only 4-D Resize is supported".into());
        }
        let upsample = cx.node.op_type == "Upsample" || cx.opset < 11;
        let (scales, sizes) = if upsample {
            (cx.floats(ins, 1)?, None)
        } else {
            (cx.floats(ins, 2)?, cx.ints(ins, 3)?)
        };
        let out: Vec<usize> = match (sizes, scales) {
            (Some(s), _) if s.len() == 4 => s.iter().map(|&v| v.max(0) as usize).collect(),
            (_, Some(sc)) if sc.len() == 4 => dims
                .iter()
                .zip(&sc)
                .map(|(&d, &f)| (d as f32 * f).floor() as usize)
                .collect(),
            _ => return Err("Resize needs 4 scales or 4 sizes".into()),
        };
        if out[0] != dims[0] || out[1] != dims[1] {
            return Err("Resize of the batch or channel axis is not supported".into());
        }
        let mode = cx.attr_s("mode", "nearest");
        let coord = if upsample {
            "asymmetric".to_string()
        } else {
            cx.attr_s("coordinate_transformation_mode", "half_pixel")
        };
        let nearest = if upsample {
            "floor".to_string()
        } else {
            cx.attr_s("nearest_mode", "round_prefer_floor")
        };
        let (m, align) = match (mode.as_str(), coord.as_str(), nearest.as_str()) {
            ("linear" | "bilinear", "half_pixel" | "pytorch_half_pixel", _) => {
                (InterpolateMode::Bilinear, false)
            }
            ("linear" | "bilinear", "align_corners", _) => (InterpolateMode::Bilinear, true),
            ("nearest", "asymmetric", "floor") => (InterpolateMode::Nearest, false),
            _ => {
                return Err(format!(
                    "Resize mode={mode} coordinate_transformation_mode={coord} \
                     nearest_mode={nearest} is not supported"
                ))
            }
        };
        let o = InterpolateOptions::new(m)
            .with_align_corners(align)
            .with_output_size([out[2], out[3]]);
        one(Dt::from4(interpolate(x.to4()?, o)))
    }
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[("Resize", &Resize), ("Upsample", &Resize)];
