//! A step's batch: the sample indices (seeded permutations per epoch) and the augmentation
//! (random crop with zero padding, horizontal flip), from the seed and the step number alone.

use super::Trainer;
use crate::data::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

impl Trainer {
    /// The sample indices of step `t`: epochs are seeded permutations; the last partial batch
    /// of an epoch is dropped.
    fn batch_indices(&self, t: usize, n: usize) -> Vec<usize> {
        let b = self.o.batch.min(n).max(1);
        let per_epoch = (n / b).max(1);
        let epoch = t / per_epoch;
        let k = t % per_epoch;
        let mut perm: Vec<usize> = (0..n).collect();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(self.o.seed ^ ((epoch as u64 + 1) * 0x9E37));
        perm.shuffle(&mut rng);
        perm[k * b..(k + 1) * b].to_vec()
    }

    /// One batch of `data` for step `t`, augmented: `[b·c·h·w]` and labels.
    pub fn batch(&self, t: usize, data: &Dataset) -> (Vec<f32>, Vec<usize>) {
        let idx = self.batch_indices(t, data.n);
        let (c, h, w) = (data.c, data.h, data.w);
        let l = c * h * w;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.o.seed.wrapping_mul(31) ^ t as u64);
        let mut x = vec![0f32; idx.len() * l];
        for (j, &i) in idx.iter().enumerate() {
            let src = data.sample(i);
            let dst = &mut x[j * l..(j + 1) * l];
            if !self.o.augment || h < 2 || w < 2 {
                dst.copy_from_slice(src);
                continue;
            }
            let p = self.o.pad as i64;
            let dy = rng.random_range(-p..=p);
            let dx = rng.random_range(-p..=p);
            let flip = rng.random::<bool>();
            for ch in 0..c {
                for y in 0..h as i64 {
                    let sy = y + dy;
                    if sy < 0 || sy >= h as i64 {
                        continue;
                    }
                    for xx in 0..w as i64 {
                        let ox = if flip { w as i64 - 1 - xx } else { xx };
                        let sx = ox + dx;
                        if sx < 0 || sx >= w as i64 {
                            continue;
                        }
                        dst[ch * h * w + y as usize * w + xx as usize] =
                            src[ch * h * w + sy as usize * w + sx as usize];
                    }
                }
            }
        }
        let y = match &data.y {
            Some(labels) => idx.iter().map(|&i| labels[i].max(0) as usize).collect(),
            None => vec![],
        };
        (x, y)
    }
}
