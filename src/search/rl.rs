//! The reinforcement-learning search: an agent decides every group's keep ratio, episodes are
//! rewarded by the oracle (recovered accuracy of the candidate), the best budget-satisfying
//! plan wins. So far: `ddpg` (AMC).

use crate::error::{Error, Result};
use crate::learn::ddpg::{self, Ddpg};
use crate::search::env::{Env, Oracle, STATE_DIM};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Options {
    pub episodes: usize,
    pub time_budget: Option<Duration>,
    pub seed: u64,
    pub ddpg: ddpg::Config,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            episodes: 100,
            time_budget: None,
            seed: 0,
            ddpg: ddpg::Config::default(),
        }
    }
}

/// One episode of the search curve.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Episode {
    pub episode: usize,
    /// Accuracy (or agreement) of this episode's candidate after recovery.
    pub reward: f64,
    /// Best so far.
    pub best: f64,
    pub macs_ratio: f64,
    pub seconds: f64,
}

pub struct Outcome {
    pub keep: Vec<bool>,
    pub best: f64,
    /// Keep ratio per group, in the episode's order.
    pub ratios: Vec<f64>,
    pub group_keys: Vec<String>,
    pub curve: Vec<Episode>,
    pub evaluations: usize,
    pub seconds: f64,
}

/// Runs the DDPG search. `log` is called after every episode.
pub fn ddpg_search(
    env: &mut Env,
    oracle: &mut Oracle,
    o: &Options,
    log: &mut dyn FnMut(&Episode),
) -> Result<Outcome> {
    if env.steps() == 0 {
        return Err(Error::Usage(
            "the model has no prunable channel group".into(),
        ));
    }
    let t0 = Instant::now();
    let (device, _) = crate::learn::device();
    // Schedule from the episode budget: a quarter random warm-up (AMC uses 100 of 400), then
    // σ decays from its initial value to a tenth of it by the last episode.
    let episodes = o.episodes.max(1);
    let warmup = (episodes / 4).max(1);
    let cfg = ddpg::Config {
        // The action range is the environment's (its minimum keep ratio .. 1).
        lo: env.min_keep,
        warmup,
        sigma_decay: 0.1f64.powf(1.0 / (episodes - warmup).max(1) as f64),
        ..o.ddpg.clone()
    };

    let mut agent = Ddpg::new(STATE_DIM, cfg, o.seed, &device);
    let mut best: Option<(f64, Vec<bool>, Vec<f64>)> = None;
    let mut curve = vec![];
    for ep in 0..episodes {
        if let Some(b) = o.time_budget {
            if ep > 0 && t0.elapsed() >= b {
                break;
            }
        }
        env.reset();
        while !env.done() {
            let s = env.state(1.0);
            let a = agent.act(&s);
            let used = env.step(a);
            agent.record(s, used);
        }
        let keep = env.keep();
        let macs = env.p.macs(&keep);
        let reward = if macs <= env.target {
            oracle.measure(&keep)?
        } else {
            0.0
        };
        agent.end_episode(reward);
        if macs <= env.target && best.as_ref().is_none_or(|b| reward > b.0) {
            best = Some((reward, keep, env.step_ratios()));
        }
        let e = Episode {
            episode: ep + 1,
            reward,
            best: best.as_ref().map(|b| b.0).unwrap_or(0.0),
            macs_ratio: macs as f64 / env.p.base_macs.max(1) as f64,
            seconds: t0.elapsed().as_secs_f64(),
        };
        log(&e);
        curve.push(e);
    }
    let (best_v, keep, ratios) = best.ok_or_else(|| {
        Error::Usage("no episode met the MAC target (declined groups make it unreachable?)".into())
    })?;
    Ok(Outcome {
        keep,
        best: best_v,
        ratios,
        group_keys: env
            .groups
            .iter()
            .map(|g| env.p.ch.groups[g.group].key.clone())
            .collect(),
        curve,
        evaluations: oracle.evaluations,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
