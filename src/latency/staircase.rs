//! `--round-to auto`: the channel multiple chosen from the runtime's measured staircase.
//!
//! Runtimes' convolution kernels work on blocks of channels (ORT's NCHWc layout pads channels
//! to 8 or 16, GEMM micro-kernels to their register tile), so a layer's latency over its kept
//! channel count is a staircase: a count just past a step costs as much as the next step.
//! Keeping a multiple of the step period is then free (the channels cost no latency) and every
//! count in between wastes time. The period depends on the runtime, its version, the CPU and
//! the thread count, so it is measured, not assumed.
//!
//! The measurement: the heaviest few prunable layers ([`LAYERS`], by MACs), each alone (the
//! same one-layer models as the profile) at every output count of a window of [`WINDOW`]
//! consecutive counts ending on a multiple of it near half the layer's channels (one layer per
//! distinct shape, so that a network of repeated blocks shows each stage). Rounding up to a
//! multiple `m` is free for a layer when, in each aligned block of `m` counts, the time at the
//! block's top (the multiple) exceeds the median time of the block's first half (the counts
//! that round up furthest) by no more than [`Z`] standard errors of that difference (the
//! median over the blocks; the noise is the robust spread of consecutive differences, which a
//! flat stretch leaves as pure noise).
//! One-sided: a runtime whose kernels are faster at multiples (onnxruntime's NCHWc path takes
//! channel counts that are multiples of its block) makes rounding up cheaper still. A layer's
//! multiple is the largest free candidate of [`CANDIDATES`]; the chosen multiple is the largest
//! of the layers' ([`choose`]): a runtime with 16-channel blocks gives 16, one whose every
//! layer's time rises measurably with each channel gives 1.

use super::measure::{self, Settings};
use crate::error::{Error, Result};
use crate::eval;
use crate::search::datafree::Pruner;
use serde::{Deserialize, Serialize};

/// Candidate channel multiples (CPU kernels block by 8 or 16; the window holds at least two
/// blocks of each).
pub const CANDIDATES: [usize; 5] = [1, 2, 4, 8, 16];
/// Standard errors by which a block's top may exceed the rest of the block and still count as
/// free.
pub const Z: f64 = 3.0;
/// The smallest noise assumed, as a fraction of the layer's time (a noiseless measurement must
/// not make every rounding look costly).
pub const NOISE_FLOOR: f64 = 0.002;
/// Counts measured per layer (twice the largest candidate).
pub const WINDOW: usize = 32;
/// Layers measured.
pub const LAYERS: usize = 3;
/// Timed runs per count at least (the steps of small layers are a few microseconds).
pub const RUNS: usize = 15;

/// One layer's latency at consecutive kept output counts, and what it says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stair {
    /// The node (see [`super::layer_keys`]).
    pub node: String,
    /// Kept output channels, consecutive.
    pub counts: Vec<usize>,
    /// Median milliseconds at each count.
    pub ms: Vec<f64>,
    /// The measurement noise (ms; robust standard deviation).
    pub noise: f64,
    /// Per candidate multiple (from 2): how much more the top of its aligned blocks costs
    /// than the rest of the block, in standard errors (the median over the blocks).
    pub score: Vec<(usize, f64)>,
    /// The largest multiple rounding up to which is free.
    pub multiple: usize,
}

/// The measured staircase and the multiple chosen from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Staircase {
    /// The chosen channel multiple (the largest of the layers').
    pub round_to: usize,
    /// [`Z`].
    pub z: f64,
    pub layers: Vec<Stair>,
}

/// The counts of the window of a space of `len` channels: [`WINDOW`] consecutive counts (fewer
/// for small spaces) ending on a multiple of the window near half of `len`.
pub fn window(len: usize) -> Vec<usize> {
    let top = if len >= 2 * WINDOW {
        (len / 2) / WINDOW * WINDOW
    } else if len >= WINDOW {
        WINDOW
    } else if len >= 2 {
        1 << (usize::BITS - 1 - len.leading_zeros())
    } else {
        return vec![];
    };
    let w = top.min(WINDOW);
    (top - w + 1..=top).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Robust standard deviation: 1.4826 × the median absolute deviation from the median.
fn robust_sd(v: &[f64]) -> f64 {
    let m = median(v.to_vec());
    1.4826 * median(v.iter().map(|x| (x - m).abs()).collect())
}

/// Reads one layer's times: its noise, the score of each candidate, and the largest multiple
/// rounding up to which is free.
pub fn read(node: &str, counts: Vec<usize>, ms: Vec<f64>) -> Stair {
    let diffs: Vec<f64> = ms.windows(2).map(|w| w[1] - w[0]).collect();
    let top = ms.last().copied().unwrap_or(0.0);
    let noise = (robust_sd(&diffs) / 2f64.sqrt()).max(NOISE_FLOOR * top);
    let mut score = vec![];
    let mut multiple = 1;
    for m in CANDIDATES.into_iter().filter(|&m| m >= 2) {
        // The standard error of a single time less the median of the block's first half (a
        // median's variance is ~π/2 σ²/n; of one or two values, σ²/n).
        let h = m / 2;
        let med_var = if h >= 3 {
            std::f64::consts::FRAC_PI_2
        } else {
            1.0
        } / h as f64;
        let se = noise * (1.0 + med_var).sqrt();
        let mut gaps = vec![];
        for (i, &c) in counts.iter().enumerate() {
            // Whole aligned blocks of m counts inside the window.
            if c % m != 0 || i + 1 < m || counts[i + 1 - m] + m - 1 != c {
                continue;
            }
            // Rounding up costs most from the block's first counts.
            let first = ms[i + 1 - m..i + 1 - m + h].to_vec();
            gaps.push((ms[i] - median(first)) / se.max(1e-12));
        }
        if gaps.is_empty() {
            break;
        }
        let sc = median(gaps);
        score.push((m, sc));
        if sc <= Z {
            multiple = m;
        }
    }
    Stair {
        node: node.into(),
        counts,
        ms,
        noise,
        score,
        multiple,
    }
}

/// The multiple chosen from the layers': the largest (1 without layers). The kernels' block
/// is the runtime's, shared by every layer; a layer whose time also rises inside each block
/// (a memory-bound stem, an expansion at full resolution) reads as a smaller period without
/// making the block any smaller.
pub fn choose(layers: &[Stair]) -> usize {
    layers.iter().map(|l| l.multiple).max().unwrap_or(1)
}

/// Measures the staircase of `p`'s heaviest layers on `s`'s runtime and chooses the multiple.
pub fn measure(p: &Pruner, s: &Settings, say: &dyn Fn(&str)) -> Result<Staircase> {
    let ls = measure::layers(p, s.batch);
    let keys = super::layer_keys(p);
    let mut heavy: Vec<(f64, usize)> = ls
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.out
                .is_some_and(|sp| window(p.ch.spaces[sp].len).len() >= 2)
        })
        .map(|(i, l)| (l.weight_macs(), i))
        .collect();
    heavy.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    // One layer per distinct shape (a repeated block measured once).
    let mut seen = std::collections::HashSet::new();
    heavy.retain(|&(_, i)| seen.insert(ls[i].shape()));
    heavy.truncate(LAYERS);
    if heavy.is_empty() {
        return Err(Error::Usage(
            "--round-to auto: the model has no prunable layer whose staircase can be measured; \
             give --round-to N"
                .into(),
        ));
    }
    let tmp = eval::TempDir::new("staircase")?;
    let mut layers = vec![];
    for (k, &(_, i)) in heavy.iter().enumerate() {
        let l = &ls[i];
        let name = &keys[&l.node];
        let counts = window(p.ch.spaces[l.out.expect("filtered")].len);
        let cin = l.inp.map_or(1, |sp| p.ch.spaces[sp].len);
        let mut ms = vec![];
        for &c in &counts {
            let runs = (s, s.runs.max(RUNS));
            ms.push(measure::time_layer(p, l, (cin, c), runs, &tmp, name)?);
        }
        say(&format!(
            "staircase {}/{}: {name} at {}..{} output channels: {:.3}..{:.3} ms",
            k + 1,
            heavy.len(),
            counts[0],
            counts[counts.len() - 1],
            ms[0],
            ms[ms.len() - 1]
        ));
        layers.push(read(name, counts, ms));
    }
    let round_to = choose(&layers);
    say(&format!(
        "--round-to auto: {round_to} (the largest of the layers' staircase periods: {})",
        layers
            .iter()
            .map(|l| l.multiple.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Staircase {
        round_to,
        z: Z,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stair(counts: Vec<usize>, f: impl Fn(usize) -> f64) -> Stair {
        let ms = counts.iter().map(|&c| f(c)).collect();
        read("l", counts, ms)
    }

    /// Up to ±`amp` deterministic jitter: independent pseudo-random values per count
    /// (splitmix64), like a runtime's timing noise.
    fn jitter(c: usize, amp: f64) -> f64 {
        let mut z = (c as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        1.0 + amp * ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
    }

    #[test]
    fn windows_end_on_a_multiple_near_half_the_channels() {
        assert_eq!(window(512), (225..=256).collect::<Vec<_>>());
        assert_eq!(window(64), (1..=32).collect::<Vec<_>>());
        assert_eq!(window(40), (1..=32).collect::<Vec<_>>());
        assert_eq!(window(16), (1..=16).collect::<Vec<_>>());
        assert_eq!(window(12), (1..=8).collect::<Vec<_>>());
        assert!(window(1).is_empty());
    }

    #[test]
    fn a_staircase_of_period_16_gives_16() {
        let steps = |c: usize| (1.0 + c.div_ceil(16) as f64) * jitter(c, 0.01);
        let l = stair(window(512), steps);
        assert_eq!(l.multiple, 16, "{l:?}");
        // With a noise spike on one count it still reads as 16.
        let mut ms = l.ms.clone();
        ms[5] *= 1.3;
        assert_eq!(read("l", l.counts.clone(), ms).multiple, 16);
    }

    #[test]
    fn a_period_8_staircase_gives_8_and_linear_time_gives_1() {
        let steps = |c: usize| (0.2 + 0.1 * c.div_ceil(8) as f64) * jitter(c, 0.005);
        assert_eq!(stair(window(64), steps).multiple, 8);
        // Time that rises with every channel: no rounding is free.
        let linear = stair(window(64), |c| 0.01 * c as f64 * jitter(c, 0.002));
        assert_eq!(linear.multiple, 1, "{linear:?}");
        // The halves grow apart with the block.
        assert!(
            linear.score.windows(2).all(|w| w[0].1 <= w[1].1),
            "{linear:?}"
        );
    }

    #[test]
    fn a_kernel_faster_at_multiples_of_16_gives_16() {
        // Off the multiples of 16 a slower path (padding and layout changes around a blocked
        // kernel); at 16 the blocked kernel alone, faster than any count below it.
        let t = |c: usize| {
            let slow = 0.4 + 0.005 * c as f64;
            let fast = 0.25 + 0.1 * c.div_ceil(16) as f64;
            (if c.is_multiple_of(16) { fast } else { slow }) * jitter(c, 0.005)
        };
        let l = stair(window(16), t);
        assert_eq!(l.multiple, 16, "{l:?}");
    }

    #[test]
    fn the_largest_period_is_chosen() {
        let steps16 = |c: usize| (1.0 + c.div_ceil(16) as f64) * jitter(c, 0.01);
        let linear = |c: usize| 0.01 * c as f64;
        let ls = vec![
            stair(window(512), steps16),
            stair(window(64), linear),
            stair(window(256), steps16),
        ];
        assert_eq!(choose(&ls), 16);
        assert_eq!(choose(&ls[..2]), 16);
        assert_eq!(choose(&ls[1..2]), 1);
        assert_eq!(choose(&[]), 1);
    }

    #[test]
    fn candidates_larger_than_a_small_window_are_left_out() {
        let l = stair(window(12), |_| 1.0);
        assert_eq!(l.multiple, 8);
        assert!(l.score.iter().all(|&(m, _)| m <= 8));
    }
}
