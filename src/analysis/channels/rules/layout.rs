//! Ops that move channels: Concat, Slice, Split, Flatten, Reshape, (Un)squeeze, Transpose,
//! reductions, and Shape reading channel counts.

use super::*;

pub(super) fn concat(cx: &mut Cx) -> Result<(), String> {
    let y = out_shape(cx, 0)?;
    let axis = crate::ir::ops::axis(cx.node().attr_i("axis").unwrap_or(0), y.len())?;
    let ins: Vec<Option<ValueId>> = cx.node().inputs.clone();
    let any = ins.iter().any(|v| cx.space(*v).is_some());
    if !any {
        return Ok(());
    }
    let o = cx.output(0).unwrap();
    let first_axis = ins
        .iter()
        .find_map(|v| cx.space(*v))
        .map(|s| cx.ch.spaces[s].axis)
        .unwrap();
    if first_axis == axis {
        let outs = cx.ch.new_space(o, axis, y[axis] as usize);
        let mut off = 0;
        for (i, v) in ins.iter().enumerate() {
            let v = v.ok_or("missing input")?;
            let len = cx.shape(v).ok_or("input shape unknown")?[axis] as usize;
            let s = input_space(
                cx,
                i,
                axis,
                "concatenated channels without a producing layer",
            )?;
            for k in 0..len {
                let (a, b) = (cx.ch.slot(outs, off + k), cx.ch.slot(s, k));
                cx.ch.union(a, b);
            }
            off += len;
        }
    } else {
        // Concat along another axis: all operands share the channels.
        let mut first: Option<SpaceId> = None;
        for (i, v) in ins.iter().enumerate() {
            if cx.space(*v).is_none() {
                return Err("concat operand without traced channels".into());
            }
            let s = input_space(cx, i, first_axis, "")?;
            match first {
                None => first = Some(s),
                Some(f) => {
                    if !cx.ch.union_spaces(f, s) {
                        return Err("concat operands differ in channels".into());
                    }
                }
            }
        }
        cx.ch.space_of.insert(o, first.unwrap());
    }
    Ok(())
}

pub(super) fn slice(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let y = out_shape(cx, 0)?;
    if x.len() != y.len() {
        return Err("rank changes".into());
    }
    let (starts, ends, axes, steps) = slice_params(cx, x.len())?;
    let mut on_axis = None;
    for k in 0..axes.len() {
        if axes[k] == axis {
            on_axis = Some((starts[k], ends[k], steps[k]));
        }
    }
    let o = cx.output(0).unwrap();
    match on_axis {
        None => {
            cx.ch.space_of.insert(o, s);
        }
        Some((st, en, sp)) => {
            let (b, _, len) = crate::ir::ops::slice_clamp(st, en, sp, x[axis]);
            if sp != 1 && len > 1 {
                // The skipped channels' fate would have to follow the kept ones' for the
                // pruned slice to be a strided slice again.
                return Err(format!("channel Slice with step {sp}"));
            }
            let outs = cx.ch.new_space(o, axis, len as usize);
            for j in 0..len {
                let (a, c) = (
                    cx.ch.slot(outs, j as usize),
                    cx.ch.slot(s, (b + j * sp) as usize),
                );
                cx.ch.union(a, c);
            }
        }
    }
    Ok(())
}

/// (starts, ends, axes, steps) of a Slice with constant parameters.
type SliceParams = (Vec<i64>, Vec<i64>, Vec<usize>, Vec<i64>);

pub(super) fn slice_params(cx: &Cx, rank: usize) -> Result<SliceParams, String> {
    let n = cx.node();
    let ints = |i: usize| {
        cx.input(i)
            .and_then(|v| cx.g.foldable_const(v))
            .and_then(|t| t.as_i64s())
    };
    let (starts, ends) = (
        ints(1).ok_or("non-constant starts")?,
        ints(2).ok_or("non-constant ends")?,
    );
    let axes: Vec<usize> = match n.inputs.get(3).copied().flatten() {
        Some(_) => ints(3)
            .ok_or("non-constant axes")?
            .iter()
            .map(|&a| crate::ir::ops::axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = match n.inputs.get(4).copied().flatten() {
        Some(_) => ints(4).ok_or("non-constant steps")?,
        None => vec![1; starts.len()],
    };
    if steps.iter().any(|&s| s <= 0) {
        return Err("negative slice steps on channels are not supported".into());
    }
    Ok((starts, ends, axes, steps))
}

pub(super) fn split(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let x = cx
        .shape(cx.input(0).unwrap())
        .ok_or("input shape unknown")?;
    let split_axis = crate::ir::ops::axis(cx.node().attr_i("axis").unwrap_or(0), x.len())?;
    let outs: Vec<Option<ValueId>> = cx.node().outputs.clone();
    if split_axis != axis {
        for o in outs.into_iter().flatten() {
            cx.ch.space_of.insert(o, s);
        }
        return Ok(());
    }
    let mut off = 0usize;
    for (k, o) in outs.iter().enumerate() {
        let o = o.ok_or("omitted Split output")?;
        let len = out_shape(cx, k)?[axis] as usize;
        let os = cx.ch.new_space(o, axis, len);
        for j in 0..len {
            let (a, b) = (cx.ch.slot(os, j), cx.ch.slot(s, off + j));
            cx.ch.union(a, b);
        }
        off += len;
    }
    Ok(())
}

pub(super) fn flatten(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let a = cx.node().attr_i("axis").unwrap_or(1);
    let a = if a < 0 { a + x.len() as i64 } else { a } as usize;
    flatten_like(cx, s, &x, a)
}

/// [d0..d(a-1)] × [da..] flattening with the channel axis at or after `a`: channel c becomes
/// features [c·inner, (c+1)·inner) (times the outer dims between a and the channel axis).
pub(super) fn flatten_like(cx: &mut Cx, s: SpaceId, x: &[i64], a: usize) -> Result<(), String> {
    let axis = cx.ch.spaces[s].axis;
    if axis < a || (axis > a && x[a..axis].iter().any(|&d| d != 1)) {
        return Err("flatten mixes the channel axis with other axes".into());
    }
    let inner: i64 = x[axis + 1..].iter().product();
    let o = cx.output(0).unwrap();
    let c = x[axis] as usize;
    let os = cx.ch.new_space(o, 1.min(a), c * inner as usize);
    for ci in 0..c {
        for k in 0..inner as usize {
            let (p, q) = (cx.ch.slot(os, ci * inner as usize + k), cx.ch.slot(s, ci));
            cx.ch.union(p, q);
        }
    }
    Ok(())
}

pub(super) fn reshape(cx: &mut Cx) -> Result<(), String> {
    let shape_of = shape_target(cx);
    let r = reshape_channels(cx, shape_of.is_some());
    let Some(v) = shape_of else {
        return r;
    };
    // The target is `Shape(v)`: after pruning it states v's kept channels, so the output's
    // channels must be v's channels, atom for atom, or neither may be cut.
    let (vs, ys) = (cx.space(Some(v)), cx.space(cx.output(0)));
    let why = match (&r, vs, ys) {
        (Err(e), _, _) => Some(e.clone()),
        (Ok(()), None, None) => None,
        (Ok(()), Some(vs), Some(ys))
            if cx.ch.spaces[vs].axis == cx.ch.spaces[ys].axis && cx.ch.union_spaces(vs, ys) =>
        {
            None
        }
        _ => Some("reshape to the shape of a tensor whose channels are traced differently".into()),
    };
    let Some(why) = why else {
        return Ok(());
    };
    let label = cx.node().label(cx.id);
    for s in [vs, ys].into_iter().flatten() {
        cx.ch.block_space(s, &format!("{why} ({label})"));
    }
    Err(why)
}

/// Whether `v` (a slice of `Shape(x)`) is read only as the first piece of Concats that are only
/// the `sizes` of Resizes of x itself ([`crate::ir::ops::sizes_follow_input`] checks the chain
/// from the Resize's side).
fn only_own_resize_sizes(g: &crate::ir::Graph, v: ValueId, axis: i64) -> bool {
    let only = |v: ValueId, ok: &dyn Fn(&crate::ir::Use) -> bool| {
        !g.is_graph_output(v) && g.value(v).uses.iter().all(ok)
    };
    only(v, &|cu| {
        cu.slot == crate::ir::Slot::Input(0)
            && g.node(cu.node).op_type == crate::ir::ops::names::CONCAT
            && g.node(cu.node)
                .outputs
                .first()
                .copied()
                .flatten()
                .is_some_and(|co| {
                    only(co, &|ru| {
                        ru.slot == crate::ir::Slot::Input(3)
                            && crate::ir::ops::sizes_follow_input(g, ru.node, axis as usize)
                    })
                })
    })
}

/// `v` when the reshape's target is `Shape(v)` (the whole shape: torch's `x.view(y.size())`,
/// and the opset-17 GroupNorm export's reshape back).
fn shape_target(cx: &Cx) -> Option<ValueId> {
    let n =
        cx.g.node(cx.g.producer(cx.input(1)?, crate::ir::ops::names::SHAPE)?);
    (n.attr_i("start").unwrap_or(0) == 0 && n.attr_i("end").is_none())
        .then(|| n.inputs.first().copied().flatten())
        .flatten()
}

/// Whether the surgery can set entry `i` of the reshape's target: a constant target, or a
/// `Concat` read only by this reshape whose piece holding entry `i` is a constant (torch's
/// dynamic-batch exports concatenate the batch read from `Shape` with constants; the Shape rule
/// already refuses a channel count read from a traced tensor's shape).
fn target_entry_rewritable(cx: &Cx, i: usize) -> bool {
    let Some(t) = cx.input(1) else {
        return false;
    };
    if cx.is_const(t) {
        return true;
    }
    let len = |v| {
        cx.shape(v)
            .and_then(|d| (d.len() == 1).then(|| d[0] as usize))
    };
    crate::ir::ops::concat_piece(cx.g, t, i, len).is_some_and(|(_, _, piece, _)| cx.is_const(piece))
}

fn reshape_channels(cx: &mut Cx, target_is_shape: bool) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let y = out_shape(cx, 0)?;
    let axis = cx.ch.spaces[s].axis;
    // Supported: flattening everything from the channel axis on into one axis, with the dims
    // before it unchanged (torch `x.view(x.size(0), -1)`), or squeezing/unsqueezing ones.
    if y.len() == axis + 1 && y[..axis] == x[..axis] {
        return flatten_like(cx, s, &x, axis);
    }
    if unit_axes_only(cx, s, &x, &y) {
        return Ok(());
    }
    if split_or_merge(cx, s, &x, &y)? {
        return Ok(());
    }
    if norm_groups(cx, s, &x, &y, target_is_shape)? {
        return Ok(());
    }
    Err("reshape that moves channels in a way that is not mapped".into())
}

/// The reshapes around a group normalisation exported as InstanceNormalization (torch's
/// opset < 18 GroupNorm: `Reshape(x, [0, G, -1])` → InstanceNormalization → `Reshape(·,
/// Shape(x))` → Mul/Add by the per-channel affine):
/// - into groups, `[…, C, S…] → […, G, (C/G)·∏S]`: slot g of the output ties the C/G channels
///   of group g, so only whole groups are removed and each kept group's statistics are
///   unchanged;
/// - back, `[…, G, (C/G)·∏S] → […, C, S…]`: channel c ties group slot c div (C/G).
///
/// A constant target has its group or channel count rewritten; a `Shape(v)` target needs no
/// rewrite (the caller ties the output's channels to v's).
fn norm_groups(
    cx: &mut Cx,
    s: SpaceId,
    x: &[i64],
    y: &[i64],
    target_is_shape: bool,
) -> Result<bool, String> {
    let axis = cx.ch.spaces[s].axis;
    let target_ok = target_is_shape || target_entry_rewritable(cx, axis);
    let o = cx.output(0).ok_or("no output")?;
    let numel = |d: &[i64]| d.iter().product::<i64>();
    if x.len() < axis + 1 || y.len() < axis + 2 || y[..axis] != x[..axis] {
        return Ok(false);
    }
    let same_rest = numel(&x[axis..]) == numel(&y[axis..]);
    // Into groups: y = [.., G, K], G < C, G | C.
    let (c, g) = (x[axis], y[axis]);
    if same_rest && y.len() == axis + 2 && g > 1 && g < c && c % g == 0 {
        if !target_ok {
            return Err("reshape into channel groups has a computed target".into());
        }
        let m = (c / g) as usize;
        let os = cx.ch.new_space(o, axis, g as usize);
        for gi in 0..g as usize {
            for j in 0..m {
                let (u, v) = (cx.ch.slot(os, gi), cx.ch.slot(s, gi * m + j));
                cx.ch.union(u, v);
            }
        }
        return Ok(true);
    }
    // Back: x = [.., G, K], y = [.., C, S..], G < C, G | C.
    let (g, c) = (x[axis], y[axis]);
    if same_rest && x.len() == axis + 2 && g > 1 && c > g && c % g == 0 {
        if !target_ok {
            return Err("reshape out of channel groups has a computed target".into());
        }
        let m = (c / g) as usize;
        let os = cx.ch.new_space(o, axis, c as usize);
        for ci in 0..c as usize {
            let (u, v) = (cx.ch.slot(os, ci), cx.ch.slot(s, ci / m));
            cx.ch.union(u, v);
        }
        return Ok(true);
    }
    Ok(false)
}

/// Reshapes that split the channel axis into several or merge it with neighbours, every other
/// dim unchanged (a channel shuffle is split → `Transpose` → merge):
/// - split `C → (…, k)`: the channels stay on the last non-unit new axis (length `k`), and
///   channel `b` of it ties input channels `o·k + b` for every outer index `o`, so each outer
///   block keeps the same positions and the reshape of the pruned tensor is the pruned reshape;
/// - merge of axes `[lo, hi)` holding the channel axis: merged index `(o·C + c)·inner + r` ties
///   channel `c` (outer `o` over the axes before it, `r` over those after it).
///
/// The rewrite resizes the target's entry on the channel axis, so that entry must be a
/// constant ([`target_entry_rewritable`]).
pub(super) fn split_or_merge(
    cx: &mut Cx,
    s: SpaceId,
    x: &[i64],
    y: &[i64],
) -> Result<bool, String> {
    let axis = cx.ch.spaces[s].axis;
    let c = x[axis];
    let o = cx.output(0).ok_or("no output")?;
    let (p, q) = (axis, x.len() - axis - 1);
    // Split.
    if y.len() > x.len() && y[..p] == x[..p] && y[y.len() - q..] == x[axis + 1..] {
        let f = &y[p..y.len() - q];
        if f.iter().all(|&d| d > 0) && f.iter().product::<i64>() == c {
            let j = f.iter().rposition(|&d| d != 1).ok_or("unit channel axis")?;
            if !target_entry_rewritable(cx, p + j) {
                return Err("reshape splitting channels has a computed target".into());
            }
            let len = f[j] as usize;
            let outer = c as usize / len;
            let os = cx.ch.new_space(o, p + j, len);
            for ob in 0..outer {
                for b in 0..len {
                    let (u, v) = (cx.ch.slot(os, b), cx.ch.slot(s, ob * len + b));
                    cx.ch.union(u, v);
                }
            }
            return Ok(true);
        }
    }
    // Merge.
    if y.len() < x.len() {
        let lo_hi = (0..=axis).find_map(|lo| {
            let hi = lo + x.len() + 1 - y.len();
            (hi > axis
                && hi <= x.len()
                && y[..lo] == x[..lo]
                && y[lo + 1..] == x[hi..]
                && y[lo] == x[lo..hi].iter().product::<i64>())
            .then_some((lo, hi))
        });
        if let Some((lo, hi)) = lo_hi {
            if !target_entry_rewritable(cx, lo) {
                return Err("reshape merging channels has a computed target".into());
            }
            let outer = x[lo..axis].iter().product::<i64>() as usize;
            let inner = x[axis + 1..hi].iter().product::<i64>() as usize;
            let c = c as usize;
            let os = cx.ch.new_space(o, lo, y[lo] as usize);
            for ob in 0..outer {
                for ci in 0..c {
                    for r in 0..inner {
                        let u = cx.ch.slot(os, (ob * c + ci) * inner + r);
                        let v = cx.ch.slot(s, ci);
                        cx.ch.union(u, v);
                    }
                }
            }
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn squeeze_unsqueeze(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let y = out_shape(cx, 0)?;
    if unit_axes_only(cx, s, &x, &y) {
        return Ok(());
    }
    Err("squeeze/unsqueeze of the channel axis".into())
}

/// When `x` → `y` only adds or removes unit axes (and the channel axis is not one), gives the
/// output a space on the channel axis's new position and returns true.
pub(super) fn unit_axes_only(cx: &mut Cx, s: SpaceId, x: &[i64], y: &[i64]) -> bool {
    let axis = cx.ch.spaces[s].axis;
    let strip = |v: &[i64]| v.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if strip(x) != strip(y) || x[axis] == 1 {
        return false;
    }
    let before: usize = x[..axis].iter().filter(|&&d| d != 1).count();
    let Some(new_axis) = y
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != 1)
        .map(|(i, _)| i)
        .nth(before)
    else {
        return false;
    };
    let Some(o) = cx.output(0) else { return false };
    let os = cx.ch.new_space(o, new_axis, y[new_axis] as usize);
    cx.ch.union_spaces(os, s)
}

pub(super) fn transpose(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let perm: Vec<usize> = match cx.node().attr_ints("perm") {
        Some(p) => p.iter().map(|&v| v as usize).collect(),
        None => (0..x.len()).rev().collect(),
    };
    let axis = cx.ch.spaces[s].axis;
    let new_axis = perm.iter().position(|&p| p == axis).ok_or("bad perm")?;
    let o = cx.output(0).unwrap();
    let os = cx.ch.new_space(o, new_axis, x[axis] as usize);
    cx.ch.union_spaces(os, s);
    Ok(())
}

/// Reductions over non-channel axes keep channels (the channel axis may move down when
/// `keepdims` is 0); reducing over channels mixes them.
pub(super) fn reduce(cx: &mut Cx) -> Result<(), String> {
    let Some((s, x)) = traced_input(cx)? else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis;
    let from_input = cx.g.node(cx.id).inputs.get(1).copied().flatten();
    let axes: Vec<i64> = match from_input {
        Some(v) => {
            cx.g.foldable_const(v)
                .and_then(|t| t.as_i64s())
                .ok_or("non-constant axes")?
        }
        None => cx
            .node()
            .attr_ints("axes")
            .map(|a| a.to_vec())
            .ok_or("reduces over every axis")?,
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| crate::ir::ops::axis(a, x.len()))
        .collect::<Result<_, _>>()?;
    if axes.is_empty() || axes.contains(&axis) {
        return Err("reduction over the channel axis".into());
    }
    let keep = cx.node().attr_i("keepdims").unwrap_or(1) != 0;
    let o = cx.output(0).ok_or("no output")?;
    if keep {
        cx.ch.space_of.insert(o, s);
    } else {
        let new_axis = axis - axes.iter().filter(|&&a| a < axis).count();
        let os = cx.ch.new_space(o, new_axis, x[axis] as usize);
        cx.ch.union_spaces(os, s);
    }
    Ok(())
}

/// `Shape` of a channel tensor is fine when only non-channel dims are read from it.
pub(super) fn shape(cx: &mut Cx) -> Result<(), String> {
    let Some(s) = cx.space(cx.input(0)) else {
        return Ok(());
    };
    let axis = cx.ch.spaces[s].axis as i64;
    let o = cx.output(0).ok_or("no output")?;
    let start = cx.node().attr_i("start").unwrap_or(0);
    for u in &cx.g.value(o).uses {
        let n = cx.g.node(u.node);
        // The whole shape as a Reshape's target: the Reshape ties its output's channels to
        // the input's (or blocks both).
        if start == 0
            && cx.node().attr_i("end").is_none()
            && n.op_type == crate::ir::ops::names::RESHAPE
            && n.is_standard()
            && u.slot == crate::ir::Slot::Input(1)
        {
            continue;
        }
        if n.op_type == crate::ir::ops::names::SLICE && n.is_standard() {
            let ints = |i: usize| {
                let v = n.inputs.get(i).copied().flatten()?;
                cx.g.foldable_const(v)?.as_i64s()
            };
            let one = |i: usize| ints(i).filter(|v| v.len() == 1).map(|v| v[0]);
            let plain = (n.inputs.get(3).copied().flatten().is_none() || one(3) == Some(0))
                && (n.inputs.get(4).copied().flatten().is_none() || one(4) == Some(1));
            // A slice of the shape that leaves out the channel entry reads no channel count.
            if let (true, 0, Some(b), Some(e)) = (plain, start, one(1), one(2)) {
                if b >= 0 && e >= 0 && (e <= axis || b > axis) {
                    continue;
                }
            }
            // Its leading dims as a Resize's `sizes` (torch's `F.interpolate(x, size=…)`):
            // only when the Resize resizes this same tensor, so the entry follows its pruning.
            let sl_out = n.outputs.first().copied().flatten();
            if start == 0 && sl_out.is_some_and(|so| only_own_resize_sizes(cx.g, so, axis)) {
                continue;
            }
        }
        let ok = n.op_type == crate::ir::ops::names::GATHER
            && n.inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|i| cx.g.foldable_const(i))
                .and_then(|t| t.as_i64s())
                .is_some_and(|idx| idx.iter().all(|&i| i + start != axis && i >= 0));
        if !ok {
            return Err("the channel count is read by Shape".into());
        }
    }
    Ok(())
}
