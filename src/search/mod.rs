//! Deciding what to keep. `datafree`: magnitude/random importance and the exact MAC model;
//! `allocate`: uniform or global allocation under a MAC budget (the baselines); `rounding`:
//! how kept counts are rounded (`--round-to`). `plan`: the
//! versioned plan file format. `recover`: fast recovery from calibration data (least squares, BN re-calibration).

pub mod allocate;
pub mod datafree;
pub mod env;
pub mod plan;
pub mod recover;
pub mod rl;
pub mod rounding;
pub mod safety;
pub mod shrink;
