//! Latency as a budget (`--target-latency`): a per-layer latency model measured on the deploy
//! runtime, stored as a versioned profile that can come from another machine.
//!
//! - [`Profile`] is the file `onnx-prune profile` writes (format in docs/latency.md): for each
//!   MAC-carrying layer (Conv, ConvTranspose, Gemm) of the simplified model, its latency in
//!   milliseconds on a grid of kept channel counts of its input and output channel spaces,
//!   measured by running that one layer alone ([`measure`]); plus the whole model's measured
//!   latency. It names the runtime, threads, batch and the SHA-256 of the model file it was
//!   measured for; [`Profile::check`] refuses a profile of another model.
//! - [`LatencyModel`] binds a profile to a [`Pruner`]'s channel spaces and predicts the latency
//!   of any kept-channel assignment: the whole model's measured time plus, for every profiled
//!   layer, the change of its time from the full counts to the kept ones (bilinear on the grid),
//!   every layer's time scaled down when the layers timed alone add up to more than the whole
//!   model (see [`LatencyModel::scale`]).
//!   Layers the profile does not cover (MatMul, anything that is not 4-D) and every op without
//!   MACs count as unchanged; the job measures the pruned model for real and tightens the
//!   predicted budget when the prediction was optimistic (see `job::latency`).
//!
//! Invariant: a profile's layers are keyed by node name in the *simplified* model (what
//! [`Pruner::new`] builds), which is deterministic for a given file; the model hash guards it.

pub mod measure;
pub mod staircase;
#[cfg(test)]
mod tests_budget;

use crate::analysis::channels::SpaceId;
use crate::error::{Error, Result};
use crate::search::datafree::Pruner;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `format` field of every profile.
pub const FORMAT: &str = "onnx-prune latency profile";
/// The profile format version this build writes and reads.
pub const VERSION: u32 = 1;

/// A layer's measured latency on a grid of kept channel counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerProfile {
    /// The node in the simplified model ([`layer_keys`]: its name, or `op#index`).
    pub node: String,
    pub op: String,
    /// Kept channels of the input space at which it was measured (one value when the input
    /// space cannot change; ignored when `tied`).
    pub in_counts: Vec<usize>,
    /// Kept channels of the output space at which it was measured.
    pub out_counts: Vec<usize>,
    /// Input and output are the same channels (depthwise convolution): measured on the
    /// diagonal, `ms` has one row.
    #[serde(default)]
    pub tied: bool,
    /// Median milliseconds: `ms[i][j]` at `in_counts[i]`, `out_counts[j]`.
    pub ms: Vec<Vec<f64>>,
}

/// A latency profile (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub version: u32,
    /// SHA-256 (hex) of the model file the profile was measured for.
    pub model_sha256: String,
    /// `ort` or `tract`.
    pub runtime: String,
    /// What the runtime said about itself (library version, execution provider).
    #[serde(default)]
    pub runtime_line: String,
    pub threads: usize,
    pub batch: usize,
    /// The input shape it ran at (batch first).
    pub input_shape: Vec<i64>,
    /// The whole model's median latency (ms).
    pub model_ms: f64,
    /// Timed runs behind every median.
    pub runs: usize,
    /// The runtime's cost of one call on a trivial model (ms): taken off every layer's time,
    /// since the layers run inside one call in the whole model.
    #[serde(default)]
    pub overhead_ms: f64,
    /// The tool and machine it was measured with (informative).
    #[serde(default)]
    pub created_by: String,
    pub layers: Vec<LayerProfile>,
    /// With `profile --round-to auto`: the measured staircase and the channel multiple chosen
    /// from it (the grid uses that multiple). Optional: profiles without it are version 1 too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staircase: Option<staircase::Staircase>,
}

/// SHA-256 (hex) of a file's bytes.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

impl Profile {
    /// Reads a profile, refusing files that are not one, or of a version this build does not
    /// read.
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not a JSON latency profile: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(Error::bad_file(
                path,
                format!("not a latency profile (no \"format\": \"{FORMAT}\")"),
            ));
        }
        let ver = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
        if ver != VERSION as u64 {
            return Err(Error::bad_file(
                path,
                format!("latency profile version {ver}; this build reads version {VERSION}"),
            ));
        }
        let p: Profile = serde_json::from_value(v)
            .map_err(|e| Error::bad_file(path, format!("malformed latency profile: {e}")))?;
        p.validate().map_err(|m| Error::bad_file(path, m))?;
        Ok(p)
    }

    /// Writes the profile atomically as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::onnx::write_atomic(path, text.as_bytes())
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.model_ms.is_finite() && self.model_ms > 0.0) {
            return Err(format!("model_ms {} is not a positive time", self.model_ms));
        }
        for l in &self.layers {
            let rows = if l.tied { 1 } else { l.in_counts.len() };
            let ok = !l.out_counts.is_empty()
                && (l.tied || !l.in_counts.is_empty())
                && l.ms.len() == rows
                && l.ms.iter().all(|r| r.len() == l.out_counts.len())
                && l.ms.iter().flatten().all(|t| t.is_finite() && *t >= 0.0)
                && sorted(&l.in_counts)
                && sorted(&l.out_counts);
            if !ok {
                return Err(format!(
                    "layer '{}': the grid and its times do not match",
                    l.node
                ));
            }
        }
        Ok(())
    }

    /// Refuses a profile measured for another model file (or another input shape).
    pub fn check(&self, model_sha256: &str, profile_path: &Path, model: &Path) -> Result<()> {
        if self.model_sha256 != model_sha256 {
            return Err(Error::bad_file(
                profile_path,
                format!(
                    "this latency profile was measured for another model (sha256 {}…), not {} \
                     (sha256 {}…): run `onnx-prune profile {}` on the device",
                    &self.model_sha256[..self.model_sha256.len().min(12)],
                    model.display(),
                    &model_sha256[..model_sha256.len().min(12)],
                    model.display()
                ),
            ));
        }
        Ok(())
    }
}

/// The key of every MAC-carrying node in a profile: the node's name when it is non-empty and
/// unique in the simplified model, else `op#index` (deterministic for a file too).
pub fn layer_keys(p: &Pruner) -> std::collections::HashMap<crate::ir::NodeId, String> {
    let g = &p.model.graph;
    let mut uses: std::collections::HashMap<&str, usize> = Default::default();
    for (_, n) in g.live_nodes() {
        *uses.entry(n.name.as_str()).or_default() += 1;
    }
    p.node_spaces()
        .into_iter()
        .map(|(id, _, _)| {
            let n = g.node(id);
            let key = if !n.name.is_empty() && uses[n.name.as_str()] == 1 {
                n.name.clone()
            } else {
                format!("{}#{}", n.op_type, id.0)
            };
            (id, key)
        })
        .collect()
}

fn sorted(v: &[usize]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Linear interpolation weights of `x` on the sorted grid `g`: `(i, j, t)` with the value
/// `(1-t)·f(g[i]) + t·f(g[j])`; clamped outside the grid.
fn bracket(g: &[usize], x: f64) -> (usize, usize, f64) {
    let n = g.len();
    if n == 1 || x <= g[0] as f64 {
        return (0, 0, 0.0);
    }
    if x >= g[n - 1] as f64 {
        return (n - 1, n - 1, 0.0);
    }
    let j = g.partition_point(|&c| (c as f64) < x);
    let (a, b) = (g[j - 1] as f64, g[j] as f64);
    (j - 1, j, (x - a) / (b - a))
}

impl LayerProfile {
    /// Interpolated milliseconds at `cin` input and `cout` output channels kept.
    pub fn at(&self, cin: f64, cout: f64) -> f64 {
        let (j0, j1, tj) = bracket(&self.out_counts, cout);
        let row = |i: usize| self.ms[i][j0] * (1.0 - tj) + self.ms[i][j1] * tj;
        if self.tied {
            return row(0);
        }
        let (i0, i1, ti) = bracket(&self.in_counts, cin);
        row(i0) * (1.0 - ti) + row(i1) * ti
    }
    /// Milliseconds at the full counts (the grids' last points).
    pub fn full(&self) -> f64 {
        let i = if self.tied { 0 } else { self.ms.len() - 1 };
        self.ms[i][self.out_counts.len() - 1]
    }
}

/// A layer's grid as predictions use it: the call overhead taken off every point (not below
/// zero), and made non-decreasing in both channel counts (a running maximum), so that more
/// channels never predict less time: measurement noise must not make the budget logic, which
/// bisects on counts, see a cheaper larger plan.
fn clean(l: &LayerProfile, overhead: f64) -> LayerProfile {
    let mut ms: Vec<Vec<f64>> =
        l.ms.iter()
            .map(|r| r.iter().map(|t| (t - overhead).max(0.0)).collect())
            .collect();
    for r in ms.iter_mut() {
        for j in 1..r.len() {
            r[j] = r[j].max(r[j - 1]);
        }
    }
    for i in 1..ms.len() {
        for j in 0..ms[i].len() {
            ms[i][j] = ms[i][j].max(ms[i - 1][j]);
        }
    }
    LayerProfile { ms, ..l.clone() }
}

/// One profiled layer bound to the pruner's channel spaces.
#[derive(Clone, Debug)]
struct Term {
    layer: usize,
    inp: Option<SpaceId>,
    out: Option<SpaceId>,
}

/// A profile bound to a pruner: predicts the latency of kept-channel counts.
#[derive(Clone, Debug)]
pub struct LatencyModel {
    pub profile: Profile,
    terms: Vec<Term>,
    full: Vec<f64>,
    /// The profile's layers as predictions use them ([`clean`], then scaled).
    layers: Vec<LayerProfile>,
    /// The factor on every layer's time: the whole model's time over the layers' times alone
    /// when those add up to more (else 1).
    pub scale: f64,
    /// Profiled layers the model no longer has (names that did not match), for the report.
    pub unmatched: Vec<String>,
}

impl LatencyModel {
    /// Binds `profile` to `p`'s spaces by node name.
    pub fn new(profile: Profile, p: &Pruner) -> LatencyModel {
        let mut terms = vec![];
        let mut unmatched = vec![];
        let keys = layer_keys(p);
        let spaces: Vec<_> = p
            .node_spaces()
            .into_iter()
            .map(|(n, i, o)| (&keys[&n], i, o))
            .collect();
        // A layer measured at one count of a space follows no space (constant); a tied
        // (depthwise) one follows whichever of its spaces exists.
        for (li, l) in profile.layers.iter().enumerate() {
            match spaces.iter().find(|(k, _, _)| **k == l.node) {
                Some(&(_, inp, out)) => {
                    let fixed = |s: Option<SpaceId>, grid: &[usize]| s.filter(|_| grid.len() > 1);
                    let (inp, out) = if l.tied {
                        (None, fixed(out.or(inp), &l.out_counts))
                    } else {
                        (fixed(inp, &l.in_counts), fixed(out, &l.out_counts))
                    };
                    terms.push(Term {
                        layer: li,
                        inp,
                        out,
                    })
                }
                None => unmatched.push(l.node.clone()),
            }
        }
        let layers: Vec<LayerProfile> = profile
            .layers
            .iter()
            .map(|l| clean(l, profile.overhead_ms))
            .collect();
        // Layers timed alone carry what the whole model does not pay per layer (the output
        // copied back to the host, no fusion with the activation, no memory planning): when
        // they add up to more than the whole model, every layer's time is scaled by the ratio.
        // (Measured with ORT, 1 thread: layers alone / whole = 0.99 resnet18_bn, 2.16
        // mobilenet_v2, 1.36 mobilenet_v3_small_bn, 1.27 squeezenet1_0; the measured savings of
        // pruned plans were 0.52, 0.72 and 0.80 of the unscaled predictions on the last three.)
        let alone: f64 = layers.iter().map(LayerProfile::full).sum();
        let scale = if alone > profile.model_ms && alone > 0.0 {
            profile.model_ms / alone
        } else {
            1.0
        };
        let layers: Vec<LayerProfile> = layers
            .into_iter()
            .map(|l| LayerProfile {
                ms: l
                    .ms
                    .iter()
                    .map(|r| r.iter().map(|t| t * scale).collect())
                    .collect(),
                ..l
            })
            .collect();
        let full = layers.iter().map(LayerProfile::full).collect();
        LatencyModel {
            profile,
            layers,
            terms,
            full,
            scale,
            unmatched,
        }
    }

    /// Predicted milliseconds with `counts[s]` channels kept in every space `s` (never below
    /// zero).
    pub fn predict(&self, counts: &[usize]) -> f64 {
        // Called for every trial of the allocation loops: no allocation here.
        let d: f64 = self.terms.iter().map(|t| self.term(t, counts).1).sum();
        (self.profile.model_ms + d).max(0.0)
    }

    /// Each profiled layer's predicted milliseconds and its change from the full model.
    pub fn per_layer(&self, counts: &[usize]) -> Vec<(f64, f64)> {
        self.terms.iter().map(|t| self.term(t, counts)).collect()
    }

    /// One bound layer's predicted milliseconds and its change from the full model.
    fn term(&self, t: &Term, counts: &[usize]) -> (f64, f64) {
        let l = &self.layers[t.layer];
        let (cin, cout) = Self::kept(l, t, counts);
        let ms = l.at(cin, cout);
        (ms, ms - self.full[t.layer])
    }

    /// A bound layer's kept input and output counts.
    fn kept(l: &LayerProfile, t: &Term, counts: &[usize]) -> (f64, f64) {
        let c = |s: Option<SpaceId>, grid: &[usize]| match s {
            Some(s) => counts[s] as f64,
            None => grid.last().copied().unwrap_or(1) as f64,
        };
        let cout = c(t.out, &l.out_counts);
        let cin = if l.tied { cout } else { c(t.inp, &l.in_counts) };
        (cin, cout)
    }

    /// Each bound layer as the profile measured it alone (no overhead taken off, not scaled):
    /// interpolated at the kept counts, and at the full counts.
    pub fn alone(&self, counts: &[usize]) -> Vec<(f64, f64)> {
        self.terms
            .iter()
            .map(|t| {
                let l = &self.profile.layers[t.layer];
                let (cin, cout) = Self::kept(l, t, counts);
                (l.at(cin, cout), l.full())
            })
            .collect()
    }

    /// Names of the bound layers, in the order of [`LatencyModel::per_layer`].
    pub fn layer_names(&self) -> Vec<&str> {
        self.terms
            .iter()
            .map(|t| self.profile.layers[t.layer].node.as_str())
            .collect()
    }
}

impl crate::search::allocate::SpaceCost for LatencyModel {
    fn predict(&self, counts: &[usize]) -> f64 {
        LatencyModel::predict(self, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(tied: bool) -> LayerProfile {
        LayerProfile {
            node: "c".into(),
            op: crate::ir::ops::names::CONV.into(),
            in_counts: if tied { vec![] } else { vec![8, 16] },
            out_counts: vec![8, 16, 32],
            tied,
            ms: if tied {
                vec![vec![1.0, 2.0, 4.0]]
            } else {
                vec![vec![1.0, 2.0, 4.0], vec![2.0, 4.0, 8.0]]
            },
        }
    }

    #[test]
    fn bilinear_on_the_grid_and_between() {
        let l = layer(false);
        assert_eq!(l.at(8.0, 8.0), 1.0);
        assert_eq!(l.at(16.0, 32.0), 8.0);
        assert_eq!(l.full(), 8.0);
        // Halfway on both axes between (8,16) and (16,32): mean of 2, 4, 4, 8.
        assert!((l.at(12.0, 24.0) - 4.5).abs() < 1e-12);
        // Clamped outside the grid.
        assert_eq!(l.at(4.0, 64.0), 4.0);
        let t = layer(true);
        assert_eq!(t.at(0.0, 24.0), 3.0);
        assert_eq!(t.full(), 4.0);
    }

    fn profile() -> Profile {
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            model_sha256: "ab".repeat(32),
            runtime: "ort".into(),
            runtime_line: String::new(),
            threads: 1,
            batch: 1,
            input_shape: vec![1, 3, 8, 8],
            model_ms: 3.0,
            runs: 5,
            overhead_ms: 0.0,
            created_by: "test".into(),
            layers: vec![layer(false), layer(true)],
            staircase: None,
        }
    }

    #[test]
    fn noise_never_makes_more_channels_cheaper() {
        let mut l = layer(false);
        l.ms = vec![vec![1.0, 0.8, 4.0], vec![0.5, 4.0, 3.0]];
        let c = clean(&l, 0.1);
        assert_eq!(c.ms, vec![vec![0.9, 0.9, 3.9], vec![0.9, 3.9, 3.9]]);
    }

    #[test]
    fn a_profile_round_trips_and_refuses_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let p = profile();
        p.save(&path).unwrap();
        let back = Profile::load(&path).unwrap();
        assert_eq!(back, p);
        back.check(&"ab".repeat(32), &path, Path::new("m.onnx"))
            .unwrap();
        let e = back
            .check(&"cd".repeat(32), &path, Path::new("m.onnx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another model"), "{e}");
        assert!(e.contains("p.json"), "{e}");
    }

    #[test]
    fn a_staircase_is_optional_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        profile().save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("staircase"), "{text}");
        let counts: Vec<usize> = (1..=16).collect();
        let ms = counts.iter().map(|&c| 1.0 + c.div_ceil(8) as f64).collect();
        let stair = staircase::read("c", counts, ms);
        let mut p = profile();
        p.staircase = Some(staircase::Staircase {
            round_to: staircase::choose(std::slice::from_ref(&stair)),
            z: staircase::Z,
            layers: vec![stair],
        });
        p.save(&path).unwrap();
        let back = Profile::load(&path).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.staircase.unwrap().round_to, 8);
    }

    #[test]
    fn wrong_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "{\"format\": \"something else\"}").unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a latency profile"), "{e}");
        let mut v = serde_json::to_value(profile()).unwrap();
        v["version"] = 99.into();
        std::fs::write(&path, v.to_string()).unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        let mut bad = profile();
        bad.layers[0].ms[1].pop();
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.contains("layer 'c'"), "{e}");
        std::fs::write(&path, "not json").unwrap();
        assert!(Profile::load(&path).is_err());
    }
}
