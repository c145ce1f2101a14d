//! AMC (He et al. 2018): the DDPG search, one continuous keep ratio per group, rewarded at the
//! episode's end.

use super::*;

/// DDPG's actions are relative to the fair share of the remaining budget (the keep ratio that,
/// given to this group and every later one, meets the target): a ∈ [0, 1] keeps
/// (1 − span + 2·span·a) × fair. Departure from AMC, which acts on absolute ratios in
/// [0.05, 1]. Measured on resnet20 at 50% (proxy top-1 on 446 images, where the uniform plan
/// scores 0.619): absolute ratios, best 0.404 after 30 episodes (random per-group ratios
/// clipped to the budget are far worse than uniform); span 0.5: 0.549 after 30, 0.590 after
/// 100; span 0.25: 0.619 after 100 (it found the uniform plan).
pub const FAIR_SPAN: f64 = 0.25;

/// AMC's DDPG search.
pub(super) fn ddpg_search(
    env: &mut Env,
    oracle: &mut dyn Measure,
    o: &Options,
    log: &mut dyn FnMut(&Episode),
) -> Result<Outcome> {
    let t0 = Instant::now();
    let (device, _) = crate::net::device();
    // Schedule from the episode budget: a quarter random warm-up (AMC uses 100 of 400), then
    // σ decays from its initial value to a tenth of it by the last episode.
    let episodes = o.episodes.max(1);
    let warmup = (episodes / 4).max(1);
    let cfg = ddpg::Config {
        // The action a ∈ [0, 1] keeps (0.5 + a) × the group's fair share of the remaining
        // budget (see `FAIR_SPAN`).
        lo: 0.0,
        hi: 1.0,
        warmup,
        sigma_decay: 0.1f64.powf(1.0 / (episodes - warmup).max(1) as f64),
        ..o.ddpg.clone()
    };

    let mut agent = Ddpg::new(STATE_DIM, cfg, o.seed, &device);
    let mut best: Best = None;
    let mut candidates = vec![];
    let mut curve = vec![];
    for ep in 0..episodes {
        if over_budget(o, t0, ep) {
            break;
        }
        env.reset();
        while !env.done() {
            let s = env.state(1.0);
            let fair = env.fair_ratio();
            let a = agent.act(&s);
            let used = env.step(fair * (1.0 - FAIR_SPAN + 2.0 * FAIR_SPAN * a));
            // The action actually applied (clipping may have changed it).
            let applied = (used / fair.max(1e-9) - 1.0 + FAIR_SPAN) / (2.0 * FAIR_SPAN);
            agent.record(s, applied.clamp(0.0, 1.0));
        }
        let keep = env.keep();
        let macs = env.p.macs(&keep);
        let fits = env.fits(&keep);
        let reward = if fits { oracle.measure(&keep)? } else { 0.0 };
        agent.end_episode(reward);
        if fits {
            candidates.push((reward, keep.clone()));
        }
        if fits && best.as_ref().is_none_or(|b| reward > b.0) {
            best = Some((reward, keep, env.step_ratios(), ep + 1));
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
    outcome(
        Agent::Ddpg,
        env,
        oracle,
        best,
        curve,
        t0,
        vec![],
        candidates,
    )
}
