//! burn implementations of ONNX ops, one file per op family, each starting with links to the
//! ONNX spec and ending with its rows (`DEFS`: op type → implementation), as in
//! `crate::ir::ops`; [`lookup`] searches the families. Adding an op is adding a row.

mod act;
mod binary;
mod conv;
mod gemm;
mod layout;
mod norm;
mod pool;
mod reduce;
mod resize;
mod select;

use super::{Dt, Fx, Val};
use crate::ir::Node;

pub type OpResult<T> = Result<T, String>;

pub trait BurnOp: Sync {
    /// Output values for the node's inputs (`None`: an omitted optional input).
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>>;
    /// Input slots holding trainable weights when they are float initializers.
    fn weights(&self) -> &'static [usize] {
        &[]
    }
    /// Input slots holding running statistics (updated in training mode, not by gradients).
    fn buffers(&self) -> &'static [usize] {
        &[]
    }
    /// Whether the outputs live on the host even for device inputs (Shape, Size).
    fn host_output(&self) -> bool {
        false
    }
    /// Whether `node` can apply a following Relu to its one output itself (when
    /// [`Fx::relu`] says so), saving a pass over the tensor and its gradient.
    fn fuses_relu(&self, _node: &crate::ir::Node) -> bool {
        false
    }
}

type Entry = (&'static str, &'static dyn BurnOp);

static FAMILIES: &[&[Entry]] = &[
    conv::DEFS,
    norm::DEFS,
    gemm::DEFS,
    act::DEFS,
    binary::DEFS,
    pool::DEFS,
    reduce::DEFS,
    layout::DEFS,
    select::DEFS,
    resize::DEFS,
];

/// Ops whose channels the pruner traces (their registry row is not `Channels::Blocks`) but that
/// have no burn forward yet, with the reason. A model containing one is pruned and recovered
/// as usual; building its training network fails with "no trainable implementation", so the
/// job says fine-tuning cannot run on it.
pub const NOT_TRAINABLE: &[(&str, &str)] = &[("LpPool", "no Lp-norm pooling in burn yet")];

/// Every (op type, burn forward) row.
fn entries() -> impl Iterator<Item = &'static Entry> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// The burn implementation for a node that computes on device tensors.
pub fn lookup(node: &Node) -> Option<&'static dyn BurnOp> {
    if !node.is_standard() {
        return None;
    }
    entries()
        .find(|(n, _)| *n == node.op_type)
        .map(|(_, op)| *op)
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> OpResult<usize> {
    crate::ir::ops::axis(a, rank)
}

/// One device output.
pub fn one(d: Dt) -> OpResult<Vec<Val>> {
    Ok(vec![Val::F(d)])
}

/// Spatial padding `(begin, end)` per axis for Conv/Pool, from `pads` or `auto_pad`.
pub fn spatial_pads(
    cx: &Fx,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> OpResult<Vec<(usize, usize)>> {
    let n = kernel.len();
    let auto = cx.attr_s("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => {
            let p = cx.attr_ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
            if p.len() != 2 * n || p.iter().any(|&v| v < 0) {
                return Err(format!("pads {p:?} do not fit {n} spatial axes"));
            }
            Ok((0..n).map(|i| (p[i] as usize, p[i + n] as usize)).collect())
        }
        "VALID" => Ok(vec![(0, 0); n]),
        "SAME_UPPER" | "SAME_LOWER" => Ok((0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let eff = (kernel[i] - 1) * dilations[i] + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(input[i]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect()),
        other => Err(format!("auto_pad {other} is not supported")),
    }
}

/// An attribute list of `n` non-negative values (default `d`).
pub fn usizes(cx: &Fx, name: &str, n: usize, d: usize) -> OpResult<Vec<usize>> {
    match cx.attr_ints(name) {
        None => Ok(vec![d; n]),
        Some(v) if v.len() == n && v.iter().all(|&x| x > 0) => {
            Ok(v.iter().map(|&x| x as usize).collect())
        }
        Some(v) => Err(format!("{name} {v:?} does not fit {n} spatial axes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::{self as ir_ops, Channels};

    /// Ties the two registries: every op the pruner traces channels through can be trained
    /// (a burn forward) or is listed as not trainable with a reason, and nothing is both.
    #[test]
    fn every_op_with_a_channel_rule_has_a_burn_forward_or_a_reason() {
        let has_burn = |name: &str| entries().any(|(n, _)| *n == name);
        let listed = |name: &str| NOT_TRAINABLE.iter().any(|(n, _)| *n == name);
        let mut missing = vec![];
        for d in ir_ops::defs() {
            if d.channels != Channels::Blocks && !has_burn(d.name) && !listed(d.name) {
                missing.push(d.name);
            }
        }
        assert!(
            missing.is_empty(),
            "no burn forward and no reason: {missing:?}"
        );
        for (name, why) in NOT_TRAINABLE {
            assert!(
                !has_burn(name),
                "{name} has a burn forward but is listed as not trainable"
            );
            assert!(!why.is_empty());
            assert!(
                ir_ops::defs().any(|d| d.name == *name),
                "{name} is not in the op registry"
            );
        }
    }
}
