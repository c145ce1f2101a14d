//! How kept channel counts are rounded (`--round-to`): one multiple for every group, or capped
//! per group by its narrowest space with every space the group reaches aligned to its own
//! width's multiple (`--round-to auto`'s first fallback). The allocations (`allocate.rs`) and
//! the agents' per-group ratios round through here.

use super::datafree::Pruner;

/// How a group's kept channel count is rounded (`--round-to`): up to a multiple of
/// `multiple`; `capped`, to a multiple no more than half the group's narrowest space (halving
/// `multiple` until it fits), so a 16-channel space can still keep 8 under a multiple of 16
/// while wider spaces keep whole blocks of 16 (`--round-to auto`'s fallback when its multiple
/// puts a latency target out of reach); capped, every space a group reaches is also aligned to
/// its own width's multiple (`Pruner::align_spaces`: a residual stream through 16-, 32- and
/// 64-channel stages keeps 8s in the first and 16s in the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rounding {
    pub multiple: usize,
    pub capped: bool,
}

impl Rounding {
    /// The multiple for a group whose narrowest space has `width` channels.
    pub fn for_width(self, width: usize) -> usize {
        let mut m = self.multiple.max(1);
        if self.capped {
            while m > 1 && m * 2 > width {
                m /= 2;
            }
        }
        m
    }
}

/// A [`Rounding`] resolved for one pruner: each group's multiple, and for a capped rounding the
/// rounding every space's own kept count is aligned to as well (`Pruner::align_spaces`).
pub(super) struct Rounded {
    pub(super) group: Vec<usize>,
    pub(super) spaces: Option<Rounding>,
}

impl From<usize> for Rounding {
    /// A fixed multiple, the same for every group.
    fn from(multiple: usize) -> Rounding {
        Rounding {
            multiple,
            capped: false,
        }
    }
}

impl Pruner {
    /// The rounding multiple of every group (`r.capped`: by its narrowest space).
    pub fn multiples(&self, r: Rounding) -> Vec<usize> {
        (0..self.group_spaces.len())
            .map(|gi| r.for_width(self.narrowest(gi)))
            .collect()
    }

    /// The channel count of the narrowest space group `gi`'s atoms reach (1 for none).
    pub(super) fn narrowest(&self, gi: usize) -> usize {
        self.group_spaces[gi]
            .first()
            .map_or(1, |g| self.ch.spaces[g.space].len)
    }

    pub(super) fn rounded(&self, r: Rounding) -> Rounded {
        Rounded {
            group: self.multiples(r),
            spaces: r.capped.then_some(r),
        }
    }

    /// With a capped rounding, a group whose atoms reach spaces of several widths (a residual
    /// stream through stages of 16, 32 and 64 channels) is rounded by its narrowest space, so
    /// its wider spaces would keep counts off the runtime's blocks. Each space's kept count is
    /// rounded up to its own width's multiple, narrowest first, with the best removed atoms of
    /// that space that no narrower space of the group holds (so a count already aligned stays
    /// so); a space without such atoms is left as it is.
    pub(super) fn align_spaces(
        &self,
        keep: &mut [bool],
        imp: &[f64],
        free: &[Vec<usize>],
        r: &Rounded,
    ) {
        let Some(rounding) = r.spaces else {
            return;
        };
        for (gi, f) in free.iter().enumerate() {
            let spaces = &self.group_spaces[gi];
            if f.is_empty() || spaces.len() < 2 {
                continue;
            }
            for g in spaces {
                let len = self.ch.spaces[g.space].len;
                let m = rounding.for_width(len);
                let mut c = (0..len).filter(|&j| keep[self.ch.atom(g.space, j)]).count();
                if m <= 1 || c % m == 0 || c >= len {
                    continue;
                }
                // Removed atoms only (blocked ones are always kept).
                let mut cand: Vec<(usize, usize)> =
                    g.fresh.iter().copied().filter(|&(a, _)| !keep[a]).collect();
                cand.sort_by(|&(a, _), &(b, _)| crate::order::fcmp(imp[b], imp[a]).then(a.cmp(&b)));
                for (a, n) in cand {
                    if c % m == 0 {
                        break;
                    }
                    keep[a] = true;
                    c += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::datafree::{Allocation, Method};

    #[test]
    fn a_capped_multiple_halves_until_it_fits_twice() {
        let capped = |m| Rounding {
            multiple: m,
            capped: true,
        };
        assert_eq!(capped(16).for_width(16), 8);
        assert_eq!(capped(16).for_width(24), 8);
        assert_eq!(capped(16).for_width(32), 16);
        assert_eq!(capped(16).for_width(3), 1);
        assert_eq!(Rounding::from(16).for_width(16), 16);
    }

    #[test]
    fn capped_rounding_prunes_narrow_groups_in_smaller_blocks() {
        let p = crate::search::datafree::tiny_pruner(3);
        let imp = p.importance(Method::L1, 0);
        let target = p.base_macs * 3 / 10;
        let width = |gi: usize| p.narrowest(gi);
        let capped = Rounding {
            multiple: 16,
            capped: true,
        };
        let m = p.multiples(capped);
        let prunable: Vec<usize> = (0..p.ch.groups.len())
            .filter(|&gi| !p.ch.groups[gi].producers.is_empty())
            .collect();
        // The model has both kinds: 16-channel groups (in 8s) and 32-channel ones (in 16s).
        assert!(prunable.iter().any(|&gi| width(gi) == 16 && m[gi] == 8));
        assert!(prunable.iter().any(|&gi| width(gi) >= 32 && m[gi] == 16));
        assert!(p.multiples(Rounding::from(16)).iter().all(|&x| x == 16));
        for alloc in [Allocation::Uniform, Allocation::Global] {
            let fixed = p.allocate(target, &imp, alloc, 16);
            let keep = p.allocate(target, &imp, alloc, capped);
            assert!(p.macs(&keep) <= target, "{alloc:?}");
            let kept =
                |k: &[bool], gi: usize| p.ch.groups[gi].atoms.iter().filter(|&&a| k[a]).count();
            for &gi in &prunable {
                let (k, all) = (kept(&keep, gi), p.ch.groups[gi].atoms.len());
                assert!(
                    k % m[gi] == 0 || k == all,
                    "{alloc:?} group {gi}: {k} of {all}"
                );
            }
            // Only the capped plan can cut a group of 16 channels (to 8).
            let cut16 = |k: &[bool]| {
                prunable
                    .iter()
                    .any(|&gi| p.ch.groups[gi].atoms.len() == 16 && kept(k, gi) < 16)
            };
            assert!(!cut16(&fixed), "{alloc:?}");
            assert!(cut16(&keep), "{alloc:?}");
        }
    }

    /// A capped rounding aligns every space of a group to its own width's multiple: the
    /// residual stream of tiny_resnet reaches its 16- and 32-channel stages; rounded by its
    /// narrowest space (8s) alone, its 32-channel spaces would keep counts off 16-blocks.
    #[test]
    fn capped_rounding_aligns_every_space_of_a_residual_stream() {
        let p = crate::search::datafree::tiny_pruner(3);
        let imp = p.importance(Method::L1, 0);
        let capped = Rounding {
            multiple: 16,
            capped: true,
        };
        let mixed: Vec<usize> = (0..p.ch.groups.len())
            .filter(|&gi| {
                let w = &p.group_spaces[gi];
                w.len() > 1
                    && p.ch.spaces[w[0].space].len < p.ch.spaces[w.last().unwrap().space].len
            })
            .collect();
        assert!(
            !mixed.is_empty(),
            "tiny_resnet has a residual stream across widths"
        );
        let counts_aligned = |keep: &[bool]| {
            let counts = p.counts(keep);
            mixed.iter().all(|&gi| {
                p.group_spaces[gi].iter().map(|g| g.space).all(|s| {
                    let len = p.ch.spaces[s].len;
                    counts[s] == len || counts[s].is_multiple_of(capped.for_width(len))
                })
            })
        };
        let mut misaligned_before = false;
        for share in [3, 4, 5, 6, 7] {
            let target = p.base_macs * share / 10;
            for alloc in [Allocation::Uniform, Allocation::Global] {
                let keep = p.allocate(target, &imp, alloc, capped);
                assert!(p.macs(&keep) <= target, "{alloc:?} {share}");
                assert!(counts_aligned(&keep), "{alloc:?} {share}");
            }
            // The agents' plans (ratios per group) too; the same ratios rounded by the group
            // alone (what the narrowest space allows) are what it mends.
            let ratios = vec![share as f64 / 10.0; p.ch.groups.len()];
            let keep = p.keep_from_ratios(&ratios, &imp, capped);
            assert!(counts_aligned(&keep), "ratios {share}");
            let free = p.free_atoms();
            let unaligned = Rounded {
                group: p.multiples(capped),
                spaces: None,
            };
            misaligned_before |= !counts_aligned(&p.keep_ratios(&ratios, &imp, &free, &unaligned));
        }
        assert!(
            misaligned_before,
            "the group's rounding alone leaves some space off its blocks"
        );
    }
}
