//! The `onnx-prune` command line, one module per command family; `main.rs` parses and
//! dispatches.

mod args;
mod eval;
mod inspect;
mod joint_args;
mod plan_cmds;
mod prune;
mod train;
mod train_args;

pub(crate) use args::*;
pub(crate) use eval::*;
pub(crate) use inspect::*;
pub(crate) use plan_cmds::*;
pub(crate) use prune::*;
pub(crate) use train::*;
pub(crate) use train_args::*;

/// A check that ran and failed — outputs beyond the tolerance (`compare`, `verify`) or, with
/// `--strict`, a target the model cannot reach: exit status 1, where errors exit 2.
#[derive(Debug)]
pub(crate) struct ToleranceExceeded(pub(crate) String);
impl std::fmt::Display for ToleranceExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ToleranceExceeded {}

/// Ctrl-C: the command wrote what it had (atomically) and says in which phase it stopped:
/// exit status 130.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) String);
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Interrupted {}
