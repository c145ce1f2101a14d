//! The surgery of the ops that hold weights or per-channel constants: convolutions (grouped and
//! depthwise included), Gemm/MatMul, elementwise operands and GroupNormalization.

use super::{select, Rw};
use crate::error::{Error, Result};
use crate::ir::ops::{Linear, WeightLayout};
use crate::ir::{AttrValue, Tensor};
use ndarray::Axis;

pub(super) fn conv(rw: &mut Rw) -> Result<()> {
    let out = rw.kept(rw.output(0));
    let inp = rw.kept(rw.input(0));
    if out.is_none() && inp.is_none() {
        return Ok(());
    }
    let layout = rw.layout()?;
    let (group, transpose) = (layout.group, layout.kind == Linear::ConvTranspose);
    let w = rw.const_input(WeightLayout::INPUT)?;
    let label = rw.label();
    let mut w2 = w.clone();
    if group == 1 {
        if let Some((_, o)) = &out {
            w2 = select(&w2, layout.out_axis, o, &label)?;
        }
        if let Some((_, i)) = &inp {
            w2 = select(&w2, layout.in_axis, i, &label)?;
        }
    } else if !transpose && w.dims[1] == 1 {
        // Depthwise: output channels follow the kept input channels (the analysis joined them).
        let o = out
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| (0..w.dims[0] as usize).collect());
        let cin_kept = inp.as_ref().map(|(_, i)| i.len() as i64).unwrap_or(group);
        w2 = select(&w2, 0, &o, &label)?;
        rw.m.graph
            .node_mut(rw.id)
            .set_attr("group", AttrValue::Int(cin_kept));
    } else if !transpose {
        w2 = grouped_weight(
            &w,
            group as usize,
            out.as_ref().map(|(_, o)| o.as_slice()),
            inp.as_ref().map(|(_, i)| i.as_slice()),
            &label,
        )?;
    } else {
        return Err(Error::Invalid(format!(
            "{label}: grouped ConvTranspose channels cannot be pruned"
        )));
    }
    rw.set_const(WeightLayout::INPUT, w2);
    if let (Some((_, o)), Some(_)) = (&out, rw.input(2)) {
        rw.slice_input(2, 0, o)?;
    }
    Ok(())
}

/// Grouped conv weight [Cout, Cin/g, k..]: keeps rows `out` and, for each kept row, the kept
/// input channels of its own group (every group must keep the same number of each).
fn grouped_weight(
    w: &Tensor,
    g: usize,
    out: Option<&[usize]>,
    inp: Option<&[usize]>,
    label: &str,
) -> Result<Tensor> {
    let cout = w.dims[0] as usize;
    let cin_g = w.dims[1] as usize;
    let cout_g = cout / g.max(1);
    let all_out: Vec<usize> = (0..cout).collect();
    let all_in: Vec<usize> = (0..cin_g * g).collect();
    let (o, i) = (out.unwrap_or(&all_out), inp.unwrap_or(&all_in));
    let cols: Vec<Vec<usize>> = (0..g)
        .map(|p| {
            i.iter()
                .filter(|&&c| c / cin_g == p)
                .map(|&c| c - p * cin_g)
                .collect()
        })
        .collect();
    let rows_per: Vec<usize> = (0..g)
        .map(|p| o.iter().filter(|&&j| j / cout_g == p).count())
        .collect();
    if cols.iter().any(|c| c.len() != cols[0].len()) || rows_per.iter().any(|&r| r != rows_per[0]) {
        return Err(Error::Invalid(format!(
            "{label}: groups of a grouped conv keep different channel counts"
        )));
    }
    let Some(crate::ir::Arr::F32(a)) = w.to_arr() else {
        return Err(Error::Usage(format!(
            "{label}: only float32 grouped conv weights can be pruned"
        )));
    };
    let rows: Vec<_> = o
        .iter()
        .map(|&j| a.index_axis(Axis(0), j).select(Axis(0), &cols[j / cout_g]))
        .collect();
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let stacked =
        ndarray::stack(Axis(0), &views).map_err(|e| Error::Invalid(format!("{label}: {e}")))?;
    Ok(crate::ir::Arr::F32(stacked).to_tensor())
}

/// Gemm (`transB` decides B's layout) and MatMul (B is [K, N]): B loses the removed input
/// features (K) and output features (N); a per-feature bias C is sliced too.
pub(super) fn gemm(rw: &mut Rw) -> Result<()> {
    let out = rw.kept(rw.output(0));
    let inp = rw.kept(rw.input(0));
    if out.is_none() && inp.is_none() {
        return Ok(());
    }
    let layout = rw.layout()?;
    let is_gemm = matches!(layout.kind, Linear::Gemm { .. });
    let label = rw.label();
    let mut b = rw.const_input(WeightLayout::INPUT)?;
    if let Some((_, i)) = &inp {
        b = select(&b, layout.in_axis, i, &label)?;
    }
    if let Some((_, o)) = &out {
        b = select(&b, layout.out_axis, o, &label)?;
    }
    rw.set_const(WeightLayout::INPUT, b);
    if let (true, Some((_, o)), Some(_)) = (is_gemm, &out, rw.input(2)) {
        let c = rw.const_input(2)?;
        let n = c.dims.last().copied().unwrap_or(1);
        if n > 1 {
            let t = select(&c, c.dims.len() - 1, o, &label)?;
            rw.set_const(2, t);
        }
    }
    Ok(())
}

/// Per-channel constant operands are sliced along the channel axis.
pub(super) fn elementwise(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.output(0)) else {
        return Ok(());
    };
    let full = rw.ch.spaces[s].len as i64;
    let y =
        rw.a.fact(rw.output(0).unwrap())
            .concrete()
            .unwrap_or_default();
    let axis = rw.ch.spaces[s].axis;
    let n = rw.m.graph.node(rw.id).inputs.len();
    for i in 0..n {
        let Some(v) = rw.input(i) else { continue };
        if rw.space(Some(v)).is_some() || rw.m.graph.foldable_const(v).is_none() {
            continue;
        }
        let t = rw.const_input(i)?;
        let off = y.len() as i64 - t.dims.len() as i64;
        let ax = axis as i64 - off;
        if ax >= 0 && t.dims.get(ax as usize) == Some(&full) && full > 1 {
            rw.slice_input(i, ax as usize, &k)?;
        }
    }
    Ok(())
}

/// GroupNormalization keeps whole groups (the analysis made each group one atom): `num_groups`
/// becomes the kept count; `scale`/`bias` are cut per channel (opset 21: C values) or per group
/// (opset 18: one value per group).
pub(super) fn group_norm(rw: &mut Rw) -> Result<()> {
    let Some((s, k)) = rw.kept(rw.input(0)) else {
        return Ok(());
    };
    let c = rw.ch.spaces[s].len;
    let label = rw.label();
    let g =
        rw.m.graph
            .node(rw.id)
            .attr_i("num_groups")
            .unwrap_or(1)
            .max(1) as usize;
    // The analysis made each norm group of `per` channels one atom (and checked c % g == 0).
    let per = (c / g).max(1);
    let groups: Vec<usize> = k.iter().step_by(per).map(|&i| i / per).collect();
    if k.len() != groups.len() * per {
        return Err(Error::Invalid(format!(
            "internal: {label}: kept channels are not whole norm groups"
        )));
    }
    rw.m.graph
        .node_mut(rw.id)
        .set_attr("num_groups", AttrValue::Int(groups.len() as i64));
    for i in 1..3 {
        if rw.input(i).is_none() {
            continue;
        }
        let n = rw.const_input(i)?.numel() as usize;
        if n == c {
            rw.slice_input(i, 0, &k)?;
        } else if n == g {
            rw.slice_input(i, 0, &groups)?;
        } else {
            return Err(Error::Invalid(format!(
                "{label}: scale/bias of {n} values for {c} channels in {g} groups"
            )));
        }
    }
    Ok(())
}
