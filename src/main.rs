//! The `onnx-prune` command line.

mod cli;

use anyhow::{bail, Result};
use clap::Parser;
use cli::*;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ToleranceExceeded>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    onnx_prune::onnx::set_constant_initializer_inputs(cli.constant_initializer_inputs);
    match cli.cmd {
        Some(Cmd::Inspect {
            model,
            json,
            top,
            groups,
            shapes,
        }) => inspect(&model, json, top, groups, &shapes.map()),
        Some(Cmd::Simplify {
            input,
            output,
            fold_bn,
            external_data,
            shapes,
        }) => simplify(&input, &output, fold_bn, &external_data, &shapes.map()),
        Some(Cmd::Compare(c)) => compare(c),
        Some(Cmd::Eval(e)) => eval_cmd(e),
        Some(Cmd::Finetune(f)) => finetune_cmd(*f),
        Some(Cmd::Profile(a)) => profile_cmd(&a),
        Some(Cmd::Shrink {
            input,
            output,
            emit_plan,
            report,
            shapes,
        }) => shrink(
            &input,
            &output,
            emit_plan.as_deref(),
            report.as_deref(),
            &shapes.map(),
        ),
        Some(Cmd::Apply {
            input,
            plan,
            output,
            report,
            shapes,
        }) => apply(&input, &plan, &output, report.as_deref(), &shapes.map()),
        Some(Cmd::Verify {
            original,
            pruned,
            plan,
            seed,
            runs,
            tolerance,
            json,
            data,
            mean,
            std,
            limit,
            shapes,
        }) => {
            let data = data.map(|d| {
                (
                    d,
                    onnx_prune::data::DataOptions {
                        mean,
                        std,
                        limit: Some(limit),
                        ..Default::default()
                    },
                )
            });
            verify(
                &original,
                &pruned,
                &plan,
                seed,
                runs,
                tolerance,
                json,
                data,
                &shapes.map(),
            )
        }
        None => {
            let p = cli.prune;
            let Some(input) = p.input.clone() else {
                bail!("no input model given; see `onnx-prune --help`");
            };
            if p.output.is_none() {
                bail!("missing -o OUT.onnx");
            }
            match (p.target_flops, p.latency.target_latency) {
                (None, None) => bail!(
                    "missing --target-flops R (fraction of MACs to keep, e.g. 0.5) or \
                     --target-latency R (fraction of the latency)"
                ),
                (Some(r), _) if !(r > 0.0 && r <= 1.0) => {
                    bail!("--target-flops must be in (0, 1], got {r}")
                }
                (_, Some(r)) if !(r > 0.0 && r <= 1.0) => {
                    bail!("--target-latency must be in (0, 1], got {r}")
                }
                _ => {}
            }
            if p.latency.target_latency.is_none() && p.latency.latency_profile.is_some() {
                bail!("--latency-profile is read for --target-latency: add --target-latency R");
            }
            if let Some(e) = p.finetune_epochs {
                if e < 0.0 || !e.is_finite() {
                    bail!("--finetune-epochs must be a non-negative number");
                }
            }
            let forced = p.finetune_epochs.is_some_and(|e| e > 0.0)
                || p.finetune_steps.is_some_and(|s| s > 0);
            if forced && p.data.is_none() {
                bail!("--finetune-epochs/--finetune-steps need training data: add --data PATH");
            }
            if p.feature_kd > 0.0 && p.data.is_none() {
                bail!("--feature-kd distils during fine-tuning, which needs training data: add --data PATH");
            }
            if p.opts.method == "ls" && p.data.is_none() {
                bail!("--method ls ranks channels on calibration images: add --data PATH");
            }
            if p.opts.method == "ls" && p.opts.allocation == "global" {
                bail!("--method ls orders channels within each group only: use --allocation uniform (or --method l1|l2 for a global threshold)");
            }
            if p.recover.as_deref().is_some_and(|r| r != "none") && p.data.is_none() {
                bail!("--recover needs calibration data: add --data PATH");
            }
            for f in [&p.opts.report, &p.opts.emit_plan, &p.output]
                .into_iter()
                .flatten()
            {
                let dir = f.parent().filter(|d| !d.as_os_str().is_empty());
                if let Some(d) = dir.filter(|d| !d.is_dir()) {
                    bail!("{}: directory {} does not exist", f.display(), d.display());
                }
            }
            if p.data.is_none() {
                eprintln!("note: no --data: channels are chosen by the data-free method (--method, --allocation); give --data for the reinforcement-learning search and recovery");
            }
            prune(
                &input,
                p.output.as_ref().unwrap(),
                p.target_flops.unwrap_or(1.0),
                &p,
            )
        }
    }
}
