//! The reinforcement-learning search: an agent decides how much (and, for `reinforce`, which)
//! channels every group keeps; candidates are measured by the oracle (recovered accuracy);
//! the best budget-satisfying plan wins. Three agents, as in the papers:
//!
//! - `ddpg` (AMC): one continuous keep ratio per group, rewarded at the episode's end.
//! - `dqn` (PuRL): discrete magnitude thresholds α ∈ {0, 0.2, …, 2.2} per group, dense reward
//!   after every step, the final plan averaged over greedy episodes.
//! - `reinforce` (Huang et al. 2018): per group, a policy over its filters samples keep masks;
//!   groups are decided from the input side to the output side, each on the model pruned so
//!   far.
//!
//! Every agent acts through [`Env`], whose clipping guarantees the MAC target. This file holds
//! what they share (options, episodes, the outcome, the time budget); each agent's driver is in
//! its own file: `amc.rs` (ddpg), `purl.rs` (dqn), `huang.rs` (reinforce). Their networks are
//! in `crate::learn`.

use crate::error::{Error, Result};
use crate::learn::ddpg::{self, Ddpg};
use crate::learn::dqn::{self, Dqn};
use crate::learn::reinforce::{self, Policy};
use crate::search::datafree::Method;
use crate::search::env::{Env, Measure, STATE_DIM};
use std::time::{Duration, Instant};

mod amc;
mod huang;
mod purl;

use amc::ddpg_search;
pub use amc::FAIR_SPAN;
use huang::reinforce_search;
pub use huang::{reinforce_reward, REINFORCE_UPDATES};
use purl::dqn_search;
pub use purl::{dqn_explore, ratio_for_alpha, ALPHAS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    Ddpg,
    Dqn,
    Reinforce,
}

impl Agent {
    pub fn parse(s: &str) -> Option<Agent> {
        match s {
            "ddpg" => Some(Agent::Ddpg),
            "dqn" => Some(Agent::Dqn),
            "reinforce" => Some(Agent::Reinforce),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Agent::Ddpg => "ddpg",
            Agent::Dqn => "dqn",
            Agent::Reinforce => "reinforce",
        }
    }
    /// Default episode budget for a model with `groups` steps: AMC-style 100 for ddpg, PuRL's
    /// ~55 for dqn; for reinforce an episode is one policy update of one group (`samples` masks
    /// measured), [`REINFORCE_UPDATES`] per group.
    pub fn default_episodes(self, groups: usize) -> usize {
        match self {
            Agent::Ddpg => 100,
            Agent::Dqn => 55,
            Agent::Reinforce => REINFORCE_UPDATES * groups.max(1),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub episodes: usize,
    pub time_budget: Option<Duration>,
    /// Set (Ctrl-C): the search ends after the current episode with its best so far.
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
    pub seed: u64,
    pub ddpg: ddpg::Config,
    pub dqn: dqn::Config,
    /// dqn: random actions are drawn within this many actions of the fair-share α, and the
    /// first episode plays the fair-share α throughout (≥ 12: PuRL's uniform exploration).
    pub dqn_spread: usize,
    /// PuRL's reward scale β.
    pub beta: f64,
    /// dqn: validation samples for the per-step (not final) rewards.
    pub probe: usize,
    /// reinforce: masks sampled per policy update (Huang et al.'s M).
    pub samples: usize,
    /// reinforce: accuracy-drop bound b of the reward ψ = (b − drop)/b.
    pub drop_bound: f64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            episodes: 100,
            time_budget: None,
            stop: None,
            seed: 0,
            ddpg: ddpg::Config::default(),
            dqn: dqn::Config::default(),
            dqn_spread: 3,
            beta: 1.0,
            probe: 200,
            samples: 4,
            drop_bound: 0.02,
        }
    }
}

/// One episode of the search curve.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Episode {
    pub episode: usize,
    /// Accuracy (or agreement) of this episode's candidate after recovery (reinforce: of the
    /// best mask of this update, on the model pruned up to this group).
    pub reward: f64,
    /// Best so far (reinforce: of the current group).
    pub best: f64,
    pub macs_ratio: f64,
    pub seconds: f64,
}

pub struct Outcome {
    pub agent: Agent,
    pub keep: Vec<bool>,
    pub best: f64,
    /// Keep ratio per group, in the episode's order.
    pub ratios: Vec<f64>,
    pub group_keys: Vec<String>,
    pub curve: Vec<Episode>,
    /// Episode (1-based) at which the chosen plan was first measured.
    pub best_episode: usize,
    pub evaluations: usize,
    pub seconds: f64,
    /// What the agent did beyond the curve (e.g. dqn's averaged greedy plan).
    pub notes: Vec<String>,
    /// Every distinct complete (budget-satisfying) plan measured, best first, with its score.
    pub candidates: Vec<(f64, Vec<bool>)>,
}

/// Runs the search with `agent`. `log` is called after every episode.
pub fn search(
    agent: Agent,
    env: &mut Env,
    oracle: &mut dyn Measure,
    o: &Options,
    log: &mut dyn FnMut(&Episode),
) -> Result<Outcome> {
    if env.steps() == 0 {
        return Err(Error::Usage(
            "the model has no prunable channel group".into(),
        ));
    }
    match agent {
        Agent::Ddpg => ddpg_search(env, oracle, o, log),
        Agent::Dqn => dqn_search(env, oracle, o, log),
        Agent::Reinforce => reinforce_search(env, oracle, o, log),
    }
}

/// The best complete plan so far: (reward, keep, ratios, episode).
type Best = Option<(f64, Vec<bool>, Vec<f64>, usize)>;

#[allow(clippy::too_many_arguments)]
fn outcome(
    agent: Agent,
    env: &Env,
    oracle: &dyn Measure,
    best: Best,
    curve: Vec<Episode>,
    t0: Instant,
    notes: Vec<String>,
    mut candidates: Vec<(f64, Vec<bool>)>,
) -> Result<Outcome> {
    candidates.sort_by(|a, b| crate::order::fcmp(b.0, a.0));
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| seen.insert(c.1.clone()));
    let (best_v, keep, ratios, best_episode) = best.ok_or_else(|| {
        Error::Usage("no episode met the MAC target (declined groups make it unreachable?)".into())
    })?;
    Ok(Outcome {
        agent,
        keep,
        best: best_v,
        ratios,
        group_keys: env
            .groups
            .iter()
            .map(|g| env.p.ch.groups[g.group].key.clone())
            .collect(),
        curve,
        best_episode,
        evaluations: oracle.evaluations(),
        seconds: t0.elapsed().as_secs_f64(),
        notes,
        candidates,
    })
}

fn over_budget(o: &Options, t0: Instant, ep: usize) -> bool {
    ep > 0
        && (o.time_budget.is_some_and(|b| t0.elapsed() >= b)
            || o.stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)))
}
