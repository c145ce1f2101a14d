//! Learning on burn: the search agents. Networks run on burn's CPU backend `flex` (chosen at
//! run time; one line says which). Weights are initialised from our own seeded RNG, so a seed
//! gives the same agent on every run.

pub mod ddpg;
pub mod dqn;
pub mod nets;
pub mod reinforce;

use burn::prelude::Device;

/// The device agents train on, and a line saying which.
pub fn device() -> (Device, String) {
    (
        Device::flex().autodiff(),
        "agent backend: burn flex (CPU)".to_string(),
    )
}
