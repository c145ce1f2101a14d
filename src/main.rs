//! The `onnx-prune` command line.

mod cli;

use anyhow::Result;
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
            let (input, output) = check(&p)?;
            if p.data.is_none() {
                eprintln!("note: no --data: channels are chosen by the data-free method (--method, --allocation); give --data for the reinforcement-learning search and recovery");
            }
            prune(&input, &output, p.target_flops.unwrap_or(1.0), &p)
        }
    }
}
