//! Deciding what to keep. `datafree`: magnitude/random importance with uniform or global
//! allocation under a MAC budget (the baselines). `plan`: the versioned plan file format.

pub mod datafree;
pub mod plan;
pub mod shrink;
