//! Per-layer figures for `net::fastconv` (issue #20): the CIFAR ResNets' convolution shapes at
//! batch 64, each pass (forward, input gradient, weight gradient) against the matrix product
//! alone on a ready im2col matrix, in GFLOP/s, median of 7 runs on rayon's threads.
//!
//! `cargo run --release --example conv_kernels` (`ONNX_PRUNE_CONV_KERNEL=avx2` for the AVX2
//! kernels on an AVX-512 machine)

use faer::{Accum, MatMut, MatRef, Par};
use onnx_prune::net::fastconv::kernels::{self, Geom};
use onnx_prune::net::fastconv::{direct, direct_grad};
use rayon::prelude::*;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(mut f: impl FnMut()) -> f64 {
    median(
        (0..7)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() {
    let n = 64;
    let threads = rayon::current_num_threads();
    println!("| layer (batch {n}, {threads} threads) | GEMM alone | forward | input gradient | weight gradient | both gradients, one pass |");
    println!("|---|---|---|---|---|---|");
    for (c, hw, o, s) in [
        (16usize, 32usize, 16usize, 1usize),
        (32, 16, 32, 1),
        (64, 8, 64, 1),
        (16, 32, 32, 2),
        (8, 32, 8, 1),
        (24, 16, 24, 1),
    ] {
        let oh = (hw + 2 - 3) / s + 1;
        let g = Geom {
            n,
            c,
            h: hw,
            w: hw,
            o,
            kh: 3,
            kw: 3,
            sh: s,
            sw: s,
            dh: 1,
            dw: 1,
            pt: 1,
            pl: 1,
            oh,
            ow: oh,
        };
        let x: Vec<f32> = (0..n * c * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..o * g.k()).map(|i| (i % 5) as f32 * 0.1).collect();
        let b = vec![0.1f32; o];
        let dy: Vec<f32> = (0..n * o * g.l()).map(|i| (i % 3) as f32 * 0.1).collect();
        let (k, l) = (g.k(), g.l());
        let cols = vec![0.2f32; k * l];
        let gemm = timed(|| {
            (0..threads).into_par_iter().for_each(|t| {
                let mut y = vec![0f32; o * l];
                for _ in (t..n).step_by(threads) {
                    faer::linalg::matmul::matmul(
                        MatMut::from_row_major_slice_mut(&mut y, o, l),
                        Accum::Replace,
                        MatRef::from_row_major_slice(&w, o, k),
                        MatRef::from_row_major_slice(&cols, k, l),
                        1.0f32,
                        Par::Seq,
                    );
                }
            })
        });
        let gf = 2.0 * (n * o * k * l) as f64 / 1e9;
        let f = |ms: f64| format!("{ms:.2} ms ({:.0} GFLOP/s)", gf / ms * 1e3);
        let im2col = [
            timed(|| drop(kernels::im2col_forward(&g, &x, &w, Some(&b), false))),
            timed(|| drop(kernels::im2col_backward(&g, None, &w, &dy, true))),
            timed(|| drop(kernels::im2col_backward(&g, Some(&x), &w, &dy, false))),
        ];
        println!(
            "| {c}→{o} at {hw}×{hw}, stride {s}, im2col | {} | {} | {} | {} | {} |",
            f(gemm),
            f(im2col[0]),
            f(im2col[1]),
            f(im2col[2]),
            f(timed(|| drop(kernels::im2col_backward(
                &g,
                Some(&x),
                &w,
                &dy,
                true
            )))),
        );
        if direct::takes(&g) {
            let d = [
                timed(|| drop(direct::forward(&g, &x, &w, Some(&b), false))),
                timed(|| drop(direct_grad::backward_x(&g, &w, &dy))),
            ];
            let (dw, both) = if direct::wgrad_fits(&g) {
                (
                    f(timed(|| drop(direct_grad::backward_w(&g, &x, &dy)))),
                    f(timed(|| {
                        drop(direct_grad::backward(&g, Some(&x), Some(&w), &dy, None))
                    })),
                )
            } else {
                ("(im2col)".into(), String::new())
            };
            println!(
                "| {c}→{o} at {hw}×{hw}, stride {s}, direct {:?} | | {} | {} | {dw} | {both} |",
                direct::isa().unwrap(),
                f(d[0]),
                f(d[1]),
            );
        }
    }
}
