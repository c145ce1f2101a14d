//! Broadcasting elementwise ops (numpy rules, opset ≥ 7):
//! <https://onnx.ai/onnx/operators/onnx__Add.html>, Sub, Mul, Div, Pow, Mod, Max/Min/Sum/Mean
//! (variadic), PRelu (slope broadcast to X), comparisons and logic (bool output),
//! <https://onnx.ai/onnx/operators/onnx__Where.html>.

use super::eval::zip2;
use super::{broadcast, eval, Channels, Fact, InferCx, Op, OpDef, OpResult, Zeros};
use crate::ir::Arr;
use crate::ir::DataType;
use std::sync::Arc;

fn out_shape(cx: &InferCx) -> OpResult<Option<Vec<crate::ir::Dim>>> {
    let mut s: Option<Vec<crate::ir::Dim>> = Some(vec![]);
    for f in cx.inputs.iter().flatten() {
        s = match (s, &f.shape) {
            (Some(a), Some(b)) => Some(broadcast(&a, b)?),
            _ => None,
        };
    }
    Ok(s)
}

pub struct Binary;
impl Op for Binary {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        let dtype = cx.dtype(0).or(cx.dtype(1));
        if cx.all_const()
            && cx.node.op_type != "Mean"
            && cx.node.op_type != super::elementwise::PRELU
        {
            let mut acc = cx.value(0);
            for i in 1..cx.inputs.len() {
                acc = match (acc, cx.value(i)) {
                    (Some(a), Some(b)) => arith(&cx.node.op_type, &a, &b),
                    _ => None,
                };
            }
            if let Some(v) = acc {
                return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
            }
        }
        Ok(vec![Fact::new(dtype, shape)])
    }
}

pub struct Compare;
impl Op for Compare {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        if cx.all_const() {
            if let (Some(a), Some(b)) = (cx.value(0), cx.value(1)) {
                if let Some(v) = compare(&cx.node.op_type, &a, &b) {
                    return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
                }
            }
        }
        Ok(vec![Fact::new(Some(DataType::BOOL), shape)])
    }
}

pub struct Where;
impl Op for Where {
    fn infer(&self, cx: &InferCx) -> OpResult<Vec<Fact>> {
        let shape = out_shape(cx)?;
        if cx.all_const() {
            if let (Some(c), Some(x), Some(y)) = (cx.value(0), cx.value(1), cx.value(2)) {
                if let Some(v) = eval::where_(&c, &x, &y) {
                    return Ok(vec![Fact::from_tensor(Arc::new(v.to_tensor()))]);
                }
            }
        }
        Ok(vec![Fact::new(cx.dtype(1).or(cx.dtype(2)), shape)])
    }
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
fn arith(op: &str, a: &Arr, b: &Arr) -> Option<Arr> {
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
fn compare(op: &str, a: &Arr, b: &Arr) -> Option<Arr> {
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

/// Op types other passes name (when they build or recognise such nodes).
pub const ADD: &str = "Add";
pub const SUB: &str = "Sub";
pub const MUL: &str = "Mul";
pub const DIV: &str = "Div";

/// This family's ops: name, implementation, channel behaviour, zeros (see [`super::OpDef`]).
pub(super) const DEFS: &[OpDef] = &[
    OpDef::new(ADD, &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new(SUB, &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new(MUL, &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AnyOperand),
    OpDef::new(DIV, &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::Numerator),
    OpDef::new("Pow", &Binary),
    OpDef::new("Mod", &Binary),
    OpDef::new("Max", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Min", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Sum", &Binary)
        .channels(Channels::Elementwise)
        .zeros(Zeros::AllOperands),
    OpDef::new("Mean", &Binary),
    OpDef::new("Equal", &Compare),
    OpDef::new("Less", &Compare),
    OpDef::new("Greater", &Compare),
    OpDef::new("LessOrEqual", &Compare),
    OpDef::new("GreaterOrEqual", &Compare),
    OpDef::new("And", &Compare),
    OpDef::new("Or", &Compare),
    OpDef::new("Xor", &Compare),
    OpDef::new("Where", &Where),
];
