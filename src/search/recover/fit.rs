//! Least-squares refits of a target's weights: im2col rows at sampled positions, the current
//! weights as a matrix, the ridge solve, writing the weights back.

use super::*;

/// Seeded output positions of sample `g` for the target with node index `ti` (the same in
/// both models, whatever else is pruned).
pub(super) fn positions(seed: u64, ti: usize, g: usize, hw: usize, m: usize) -> Vec<usize> {
    if m >= hw {
        return (0..hw).collect();
    }
    let s = seed ^ (ti as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (g as u64).rotate_left(32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(s);
    let mut v = rand::seq::index::sample(&mut rng, hw, m).into_vec();
    v.sort_unstable();
    v
}

/// Rows of the design matrix for one batch of the target's input `v`.
#[allow(clippy::too_many_arguments)]
pub(super) fn lhs_rows(
    t: &Target,
    v: &HostTensor,
    kin: Option<&[usize]>,
    seed: u64,
    ti: usize,
    first: usize,
    m: usize,
    out_hw: usize,
    out_hw2: [usize; 2],
    cols: usize,
) -> Result<Vec<f64>> {
    let (b, c, in_hw) = dims3(v, &t.label)?;
    let mut rows = Vec::with_capacity(b * m * cols);
    match &t.kernel {
        Kernel::Conv {
            k,
            stride,
            dil,
            pad,
            auto_upper,
        } => {
            if v.shape.len() != 4 {
                return Err(Error::Usage(format!("{}: conv input is not 4-D", t.label)));
            }
            let (h, w) = (v.shape[2], v.shape[3]);
            let (ho, wo) = (out_hw2[0], out_hw2[1]);
            if ho * wo != out_hw {
                return Err(Error::Usage(format!("{}: output is not 2-D", t.label)));
            }
            let pads = match pad {
                Some(p) => *p,
                None => {
                    let same = |i: usize, o: usize, ax: usize| {
                        let total =
                            ((o - 1) * stride[ax] + (k[ax] - 1) * dil[ax] + 1).saturating_sub(i);
                        if *auto_upper {
                            total / 2
                        } else {
                            total - total / 2
                        }
                    };
                    [same(h, ho, 0), same(w, wo, 1)]
                }
            };
            let all: Vec<usize>;
            let chans = match kin {
                Some(k) => k,
                None => {
                    all = (0..c).collect();
                    &all
                }
            };
            if chans.iter().any(|&ci| ci >= c) {
                return Err(Error::Usage(format!("{}: input has {c} channels", t.label)));
            }
            let bias = cols == chans.len() * k[0] * k[1] + 1;
            for bi in 0..b {
                let img = &v.data[bi * c * in_hw..(bi + 1) * c * in_hw];
                for pos in positions(seed, ti, first + bi, out_hw, m) {
                    let (oy, ox) = (pos / wo, pos % wo);
                    for &ci in chans {
                        for ky in 0..k[0] {
                            let y = (oy * stride[0] + ky * dil[0]) as isize - pads[0] as isize;
                            for kx in 0..k[1] {
                                let xx = (ox * stride[1] + kx * dil[1]) as isize - pads[1] as isize;
                                let val =
                                    if y >= 0 && (y as usize) < h && xx >= 0 && (xx as usize) < w {
                                        img[ci * in_hw + y as usize * w + xx as usize] as f64
                                    } else {
                                        0.0
                                    };
                                rows.push(val);
                            }
                        }
                    }
                    if bias {
                        rows.push(1.0);
                    }
                }
            }
        }
        Kernel::Dense { bias, .. } => {
            let per = v.data.len() / b.max(1);
            let width = kin.map(|k| k.len()).unwrap_or(per);
            if v.shape.len() != 2
                || width + usize::from(*bias) != cols
                || kin.is_some_and(|k| k.iter().any(|&i| i >= per))
            {
                return Err(Error::Usage(format!(
                    "{}: dense input {:?} does not match its weight",
                    t.label, v.shape
                )));
            }
            for bi in 0..b {
                let row = &v.data[bi * per..(bi + 1) * per];
                match kin {
                    Some(k) => rows.extend(k.iter().map(|&i| row[i] as f64)),
                    None => rows.extend(row.iter().map(|&x| x as f64)),
                }
                if *bias {
                    rows.push(1.0);
                }
            }
        }
        Kernel::Other => unreachable!("least squares only runs on Conv/Dense targets"),
    }
    Ok(rows)
}

/// A node's weights (and bias row) as a [cols, k] matrix (k output channels).
pub(super) fn weights_of(
    m: &Model,
    node: NodeId,
    kernel: &Kernel,
    k: usize,
    label: &str,
) -> Result<Mat<f64>> {
    let n = m.graph.node(node);
    let wt = n
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|w| m.graph.foldable_const(w))
        .ok_or_else(|| Error::Usage(format!("{label}: weight is not a constant")))?;
    let w = wt
        .as_f32s()
        .ok_or_else(|| Error::Usage(format!("{label}: weight is not float32")))?;
    let wd = &wt.dims;
    let bias: Option<Vec<f32>> = n
        .inputs
        .get(2)
        .copied()
        .flatten()
        .and_then(|b| m.graph.foldable_const(b))
        .and_then(|b| b.as_f32s());
    if k == 0 || w.len() % k != 0 {
        return Err(Error::Usage(format!(
            "{label}: weight does not have {k} outputs"
        )));
    }
    let b = |o: usize| bias.as_ref().map(|b| b[o % b.len()] as f64).unwrap_or(0.0);
    match *kernel {
        Kernel::Conv { .. } => {
            let per = w.len() / k;
            Ok(Mat::from_fn(per + 1, k, |i, o| {
                if i < per {
                    w[o * per + i] as f64
                } else {
                    b(o)
                }
            }))
        }
        Kernel::Dense { trans, bias: hb } => {
            let kin = (wd[0] * wd[1]) as usize / k;
            Ok(Mat::from_fn(kin + usize::from(hb), k, |i, o| {
                if i < kin {
                    (if trans { w[o * kin + i] } else { w[i * k + o] }) as f64
                } else {
                    b(o)
                }
            }))
        }
        Kernel::Other => Err(Error::Usage(format!(
            "{label}: least squares supports Conv (group 1), Gemm and MatMul"
        ))),
    }
}

/// max |A·W₀ − y| / max(max |y|, 1) on the sampled rows of the first batch, where y is the
/// runtime's output of the target.
#[allow(clippy::too_many_arguments)]
pub(super) fn patch_mismatch(
    t: &Target,
    rows: &[f64],
    w0: &Mat<f64>,
    out: &HostTensor,
    seed: u64,
    ti: usize,
    m: usize,
) -> f64 {
    let cols = w0.nrows();
    let Ok((b, ch, hw)) = dims3(out, &t.label) else {
        return f64::INFINITY;
    };
    if ch != w0.ncols() {
        return f64::INFINITY;
    }
    let (mut worst, mut scale) = (0f64, 1f64);
    let mut r = 0;
    for bi in 0..b {
        let img = &out.data[bi * ch * hw..(bi + 1) * ch * hw];
        for pos in positions(seed, ti, bi, hw, m) {
            let row = &rows[r * cols..(r + 1) * cols];
            for o in 0..ch {
                let pred: f64 = row.iter().enumerate().map(|(i, a)| a * w0[(i, o)]).sum();
                let y = img[o * hw + pos] as f64;
                worst = worst.max((pred - y).abs());
                scale = scale.max(y.abs());
            }
            r += 1;
        }
    }
    worst / scale
}

/// Ridge solution towards `w0`; returns the weights and the relative fit error before/after.
pub(super) fn solve_ridge(
    g: &Mat<f64>,
    cy: &Mat<f64>,
    yy: f64,
    w0: &Mat<f64>,
    ridge: f64,
    label: &str,
) -> Result<(Mat<f64>, f64, f64)> {
    let n = g.nrows();
    let mean_diag = (0..n).map(|i| g[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let err = |w: &Mat<f64>| {
        // ‖AW − Y‖² = tr(WᵀGW) − 2·tr(WᵀC) + ‖Y‖²
        let gw = g * w;
        let mut e = yy;
        for j in 0..w.ncols() {
            for i in 0..n {
                e += w[(i, j)] * (gw[(i, j)] - 2.0 * cy[(i, j)]);
            }
        }
        e.max(0.0) / yy.max(1e-30)
    };
    let mut lambda = ridge * mean_diag.max(1e-12);
    for _ in 0..6 {
        let mut a = g.clone();
        for i in 0..n {
            a[(i, i)] += lambda;
        }
        let mut rhs = cy + w0 * faer::Scale(lambda);
        if let Ok(llt) = a.llt(Side::Lower) {
            llt.solve_in_place(&mut rhs);
            if rhs.col_iter().all(|c| c.iter().all(|v| v.is_finite())) {
                return Ok((rhs.clone(), err(w0), err(&rhs)));
            }
        }
        lambda *= 10.0;
    }
    Err(Error::Usage(format!(
        "{label}: least-squares system is singular even with ridge"
    )))
}

pub(super) fn replace_const(m: &mut Model, node: NodeId, slot: usize, t: Tensor, hint: &str) {
    let v = m.graph.add_const(hint, t);
    while m.graph.node(node).inputs.len() <= slot {
        m.graph.node_mut(node).inputs.push(None);
    }
    m.graph.set_input(node, slot, Some(v));
}

pub(super) fn write_weights(m: &mut Model, t: &Target, w: &Mat<f64>) -> Result<()> {
    let n = m.graph.node(t.node);
    let wv = n.inputs[1].unwrap();
    let wname = m.graph.value(wv).name.clone();
    let dims = m.graph.foldable_const(wv).unwrap().dims.clone();
    let k = t.kout.len();
    let (wdata, bias): (Vec<f32>, Option<Vec<f32>>) = match t.kernel {
        Kernel::Conv { .. } => {
            let per = w.nrows() - 1;
            let mut d = vec![0f32; k * per];
            for o in 0..k {
                for i in 0..per {
                    d[o * per + i] = w[(i, o)] as f32;
                }
            }
            (d, Some((0..k).map(|o| w[(per, o)] as f32).collect()))
        }
        Kernel::Dense { trans, bias } => {
            let kin = w.nrows() - usize::from(bias);
            let mut d = vec![0f32; k * kin];
            for o in 0..k {
                for i in 0..kin {
                    d[if trans { o * kin + i } else { i * k + o }] = w[(i, o)] as f32;
                }
            }
            (
                d,
                bias.then(|| (0..k).map(|o| w[(kin, o)] as f32).collect()),
            )
        }
        Kernel::Other => unreachable!(),
    };
    replace_const(
        m,
        t.node,
        1,
        Tensor::f32(&dims, wdata),
        &format!("{wname}_ls"),
    );
    if let Some(b) = bias {
        replace_const(
            m,
            t.node,
            2,
            Tensor::f32(&[k as i64], b),
            &format!("{wname}_ls_bias"),
        );
    }
    Ok(())
}
