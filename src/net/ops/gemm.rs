//! Matrix products.
//! - Gemm: <https://onnx.ai/onnx/operators/onnx__Gemm.html> (Y = α·A'·B' + β·C; B and C weights)
//! - MatMul: <https://onnx.ai/onnx/operators/onnx__MatMul.html> (numpy matmul; batch dims
//!   broadcast; 1-D operands promoted and the added axis removed; a constant operand is a weight)

use super::Entry;
use super::{one, BurnOp, OpResult};
use crate::net::{Dt, Fx, Val};

pub struct Gemm;
pub struct MatMul;

impl BurnOp for Gemm {
    fn weights(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let mut a = cx.f(ins, 0)?.to2()?;
        let mut b = cx.f(ins, 1)?.to2()?;
        if cx.attr_i("transA", 0) != 0 {
            a = a.transpose();
        }
        if cx.attr_i("transB", 0) != 0 {
            b = b.transpose();
        }
        let alpha = cx.attr_f("alpha", 1.0) as f64;
        let beta = cx.attr_f("beta", 1.0) as f64;
        let mut y = a.matmul(b);
        if alpha != 1.0 {
            y = y * alpha;
        }
        let mut y = Dt::from2(y);
        if let Some(c) = cx.opt_f(ins, 2)? {
            let c = if beta != 1.0 {
                Dt::new(c.t * beta, c.rank)
            } else {
                c
            };
            y = Dt::new(y.t + c.t, 2);
        }
        one(y)
    }
}

impl BurnOp for MatMul {
    fn weights(&self) -> &'static [usize] {
        &[0, 1]
    }
    fn forward(&self, cx: &Fx, ins: &[Option<Val>]) -> OpResult<Vec<Val>> {
        let a = cx.f(ins, 0)?;
        let b = cx.f(ins, 1)?;
        let (a1, b1) = (a.rank == 1, b.rank == 1);
        let a = if a1 {
            let k = a.dims()[0];
            a.reshape(&[1, k])?
        } else {
            a
        };
        let b = if b1 {
            let k = b.dims()[0];
            b.reshape(&[k, 1])?
        } else {
            b
        };
        let r = a.rank.max(b.rank);
        if a.rank == 2 && b.rank == 2 {
            let y = Dt::from2(a.to2()?.matmul(b.to2()?));
            return one(squeeze_promoted(y, a1, b1)?);
        }
        // Broadcast the batch dims (all but the last two) explicitly.
        let (da, db) = (a.t.dims(), b.t.dims());
        let mut sa = da;
        let mut sb = db;
        for i in 0..4 {
            let m = da[i].max(db[i]);
            sa[i] = m;
            sb[i] = m;
        }
        let y = a.t.expand(sa).matmul(b.t.expand(sb));
        one(squeeze_promoted(Dt::new(y, r), a1, b1)?)
    }
}

fn squeeze_promoted(y: Dt, a1: bool, b1: bool) -> OpResult<Dt> {
    let mut d = y.dims();
    let r = d.len();
    if b1 {
        d.remove(r - 1);
    }
    if a1 {
        d.remove(r - 2);
    }
    y.reshape(&d)
}

/// This family's burn forwards by op type.
pub(super) const DEFS: &[Entry] = &[("Gemm", &Gemm), ("MatMul", &MatMul)];
