//! Helpers for computing constant values (folding) on [`Arr`]s.

use super::{OpResult, MAX_FOLD_ELEMS};
use crate::ir::Arr;
use ndarray::{ArrayD, IxDyn, Zip};

pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                (1, d) | (d, 1) => Some(d),
                (p, q) if p == q => Some(p),
                _ => None,
            }
        })
        .collect()
}

pub fn zip2<T: Copy, U>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> U) -> Option<ArrayD<U>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = a.broadcast(IxDyn(&shape))?;
    let bv = b.broadcast(IxDyn(&shape))?;
    Some(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// Whether a constant result of this shape is small enough to fold ([`MAX_FOLD_ELEMS`]). Ops
/// whose output shape does not depend on folding (ConstantOfShape, Expand) give the shape alone
/// when it is not: a 25088×4096 weight filled by ConstantOfShape still has a known shape.
pub fn fits(shape: &[usize]) -> bool {
    check_size(shape).is_ok()
}

pub fn check_size(shape: &[usize]) -> OpResult<()> {
    let n = shape
        .iter()
        .try_fold(1i64, |a, &d| a.checked_mul(i64::try_from(d).ok()?))
        .unwrap_or(i64::MAX);
    if n > MAX_FOLD_ELEMS {
        return Err(format!(
            "constant result of {n} elements is too large to fold"
        ));
    }
    Ok(())
}

/// Generic n-ary `Where`.
pub fn where_(c: &Arr, x: &Arr, y: &Arr) -> Option<Arr> {
    let Arr::Bool(c) = c else { return None };
    macro_rules! w {
        ($x:expr, $y:expr, $ctor:path) => {{
            let s = broadcast_shape(&broadcast_shape(c.shape(), $x.shape())?, $y.shape())?;
            let cv = c.broadcast(IxDyn(&s))?;
            let xv = $x.broadcast(IxDyn(&s))?;
            let yv = $y.broadcast(IxDyn(&s))?;
            Some($ctor(
                Zip::from(&cv)
                    .and(&xv)
                    .and(&yv)
                    .map_collect(|&c, &a, &b| if c { a } else { b }),
            ))
        }};
    }
    match (x, y) {
        (Arr::F32(a), Arr::F32(b)) => w!(a, b, Arr::F32),
        (Arr::F64(a), Arr::F64(b)) => w!(a, b, Arr::F64),
        (Arr::I64(a), Arr::I64(b)) => w!(a, b, Arr::I64),
        (Arr::I32(a), Arr::I32(b)) => w!(a, b, Arr::I32),
        (Arr::Bool(a), Arr::Bool(b)) => w!(a, b, Arr::Bool),
        _ => None,
    }
}

/// Shape-only reshape of a constant (row-major).
pub fn reshape(a: &Arr, shape: &[usize]) -> Option<Arr> {
    crate::arr_try_map!(a, x => x.as_standard_layout().to_owned().into_shape_with_order(IxDyn(shape)).ok())
}
