//! Pruning plans: which channels each group keeps, keyed by stable names derived from the
//! model's node names, so a plan can be re-applied (`onnx-prune apply`) and verified.
//!
//! Format (JSON, `version` 1):
//! ```json
//! {"format": "onnx-prune-plan", "version": 1,
//!  "source": {"file": "in.onnx", "macs": 40551040},
//!  "groups": [{"key": "/layer1/layer1.0/conv1/Conv:16", "channels": 16, "keep": [0, 2, 3]}]}
//! ```
//! `key` is the group's first producing node name and its channel count; `keep` lists kept
//! channel indices in the group's order (sorted). Groups not listed keep everything.

use super::datafree::Pruner;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "onnx-prune-plan";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanGroup {
    pub key: String,
    pub channels: usize,
    pub keep: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub file: String,
    pub macs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub source: Source,
    pub groups: Vec<PlanGroup>,
}

impl Plan {
    /// Describes `keep` (per atom) for the pruner's groups (only groups that lose channels).
    pub fn from_keep(p: &Pruner, keep: &[bool], file: &str) -> Plan {
        let groups =
            p.ch.groups
                .iter()
                .filter(|g| g.atoms.iter().any(|&a| !keep[a]))
                .map(|g| PlanGroup {
                    key: g.key.clone(),
                    channels: g.atoms.len(),
                    keep: g
                        .atoms
                        .iter()
                        .enumerate()
                        .filter(|(_, &a)| keep[a])
                        .map(|(i, _)| i)
                        .collect(),
                })
                .collect();
        Plan {
            format: FORMAT.into(),
            version: VERSION,
            source: Source {
                file: file.into(),
                macs: p.base_macs,
            },
            groups,
        }
    }

    /// The per-atom keep vector this plan means for `p`'s model.
    pub fn to_keep(&self, p: &Pruner) -> Result<Vec<bool>> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(Error::Usage(format!(
                "not an onnx-prune plan of version {VERSION} (format '{}', version {})",
                self.format, self.version
            )));
        }
        let mut keep = vec![true; p.ch.atoms.len()];
        for pg in &self.groups {
            let g = p.ch.groups.iter().find(|g| g.key == pg.key).ok_or_else(|| {
                Error::Usage(format!("plan group '{}' does not exist in this model (was the plan made for another model?)", pg.key))
            })?;
            if g.atoms.len() != pg.channels {
                return Err(Error::Usage(format!(
                    "plan group '{}' has {} channels, the model's has {}",
                    pg.key,
                    pg.channels,
                    g.atoms.len()
                )));
            }
            if pg.keep.is_empty() {
                return Err(Error::Usage(format!(
                    "plan group '{}' keeps no channel",
                    pg.key
                )));
            }
            for &a in &g.atoms {
                keep[a] = false;
            }
            for &i in &pg.keep {
                let &a = g.atoms.get(i).ok_or_else(|| {
                    Error::Usage(format!("plan group '{}': channel {i} out of range", pg.key))
                })?;
                keep[a] = true;
            }
            for &a in &g.atoms {
                if !keep[a] && p.ch.atoms[a].blocked.is_some() {
                    return Err(Error::Usage(format!(
                        "plan group '{}' removes a channel that cannot be removed: {}",
                        pg.key,
                        p.ch.atoms[a].blocked.as_deref().unwrap_or("")
                    )));
                }
            }
        }
        Ok(keep)
    }
}
