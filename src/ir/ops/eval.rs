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

trait Wrap {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}
macro_rules! wrap_int {
    ($($t:ty),*) => {$(impl Wrap for $t {
        fn add(self, o: Self) -> Self { self.wrapping_add(o) }
        fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
        fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
    })*};
}
macro_rules! wrap_float {
    ($($t:ty),*) => {$(impl Wrap for $t {
        fn add(self, o: Self) -> Self { self + o }
        fn sub(self, o: Self) -> Self { self - o }
        fn mul(self, o: Self) -> Self { self * o }
    })*};
}
wrap_int!(i64, i32);
wrap_float!(f32, f64);

/// Numeric binary op on two arrays of the same type. `None` if unsupported.
pub fn arith(op: &str, a: &Arr, b: &Arr) -> Option<Arr> {
    macro_rules! num {
        ($x:expr, $y:expr, $ctor:path, $t:ty, $div:expr, $pow:expr, $rem:expr) => {{
            let f: fn($t, $t) -> $t = match op {
                // Integer arithmetic wraps (as runtimes do) instead of panicking.
                "Add" | "Sum" => |x, y| Wrap::add(x, y),
                "Sub" => |x, y| Wrap::sub(x, y),
                "Mul" => |x, y| Wrap::mul(x, y),
                "Div" => $div,
                "Max" => |x, y| if x >= y { x } else { y },
                "Min" => |x, y| if x <= y { x } else { y },
                "Pow" => $pow,
                "Mod" => $rem,
                _ => return None,
            };
            Some($ctor(zip2($x, $y, f)?))
        }};
    }
    match (a, b) {
        (Arr::F32(x), Arr::F32(y)) => num!(
            x,
            y,
            Arr::F32,
            f32,
            |x, y| x / y,
            |x: f32, y| x.powf(y),
            |x: f32, y| x % y
        ),
        (Arr::F64(x), Arr::F64(y)) => num!(
            x,
            y,
            Arr::F64,
            f64,
            |x, y| x / y,
            |x: f64, y| x.powf(y),
            |x: f64, y| x % y
        ),
        (Arr::I64(x), Arr::I64(y)) => num!(
            x,
            y,
            Arr::I64,
            i64,
            |x: i64, y: i64| if y == 0 { 0 } else { x.wrapping_div(y) },
            |x: i64, y: i64| x.wrapping_pow(y.clamp(0, 63) as u32),
            |x: i64, y: i64| if y == 0 { 0 } else { x.wrapping_rem(y) }
        ),
        (Arr::I32(x), Arr::I32(y)) => num!(
            x,
            y,
            Arr::I32,
            i32,
            |x: i32, y: i32| if y == 0 { 0 } else { x.wrapping_div(y) },
            |x: i32, y: i32| x.wrapping_pow(y.clamp(0, 31) as u32),
            |x: i32, y: i32| if y == 0 { 0 } else { x.wrapping_rem(y) }
        ),
        _ => None,
    }
}

/// Comparison/logical ops producing bools.
pub fn compare(op: &str, a: &Arr, b: &Arr) -> Option<Arr> {
    macro_rules! cmp {
        ($x:expr, $y:expr) => {{
            let out = match op {
                "Equal" => zip2($x, $y, |x, y| x == y),
                "Less" => zip2($x, $y, |x, y| x < y),
                "Greater" => zip2($x, $y, |x, y| x > y),
                "LessOrEqual" => zip2($x, $y, |x, y| x <= y),
                "GreaterOrEqual" => zip2($x, $y, |x, y| x >= y),
                _ => return None,
            };
            Some(Arr::Bool(out?))
        }};
    }
    match (a, b) {
        (Arr::F32(x), Arr::F32(y)) => cmp!(x, y),
        (Arr::F64(x), Arr::F64(y)) => cmp!(x, y),
        (Arr::I64(x), Arr::I64(y)) => cmp!(x, y),
        (Arr::I32(x), Arr::I32(y)) => cmp!(x, y),
        (Arr::Bool(x), Arr::Bool(y)) => match op {
            "And" => Some(Arr::Bool(zip2(x, y, |p, q| p && q)?)),
            "Or" => Some(Arr::Bool(zip2(x, y, |p, q| p || q)?)),
            "Xor" => Some(Arr::Bool(zip2(x, y, |p, q| p ^ q)?)),
            "Equal" => Some(Arr::Bool(zip2(x, y, |p, q| p == q)?)),
            _ => None,
        },
        _ => None,
    }
}

/// Float unary functions used in folding.
pub fn unary(op: &str, a: &Arr) -> Option<Arr> {
    macro_rules! fl {
        ($x:expr, $ctor:path) => {{
            Some($ctor(match op {
                "Neg" => $x.mapv(|v| -v),
                "Abs" => $x.mapv(|v| v.abs()),
                "Sqrt" => $x.mapv(|v| v.sqrt()),
                "Floor" => $x.mapv(|v| v.floor()),
                "Ceil" => $x.mapv(|v| v.ceil()),
                "Round" => $x.mapv(|v| v.round_ties_even()),
                "Exp" => $x.mapv(|v| v.exp()),
                "Log" => $x.mapv(|v| v.ln()),
                "Reciprocal" => $x.mapv(|v| 1.0 / v),
                "Relu" => $x.mapv(|v| if v > 0.0 { v } else { 0.0 }),
                "Sigmoid" => $x.mapv(|v| 1.0 / (1.0 + (-v).exp())),
                "Tanh" => $x.mapv(|v| v.tanh()),
                "Sin" => $x.mapv(|v| v.sin()),
                "Cos" => $x.mapv(|v| v.cos()),
                _ => return None,
            }))
        }};
    }
    match a {
        Arr::F32(x) => fl!(x, Arr::F32),
        Arr::F64(x) => fl!(x, Arr::F64),
        Arr::I64(x) => match op {
            "Neg" => Some(Arr::I64(x.mapv(|v| v.wrapping_neg()))),
            "Abs" => Some(Arr::I64(x.mapv(|v| v.wrapping_abs()))),
            "Relu" => Some(Arr::I64(x.mapv(|v| v.max(0)))),
            _ => None,
        },
        Arr::I32(x) => match op {
            "Neg" => Some(Arr::I32(x.mapv(|v| v.wrapping_neg()))),
            "Abs" => Some(Arr::I32(x.mapv(|v| v.wrapping_abs()))),
            "Relu" => Some(Arr::I32(x.mapv(|v| v.max(0)))),
            _ => None,
        },
        Arr::Bool(x) if op == "Not" => Some(Arr::Bool(x.mapv(|v| !v))),
        _ => None,
    }
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
