//! The `onnx-prune` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use onnx_prune::analysis::{self, parse_input_shape, ShapeMode};
use onnx_prune::ir::{Dim, Model, ValueDef};
use onnx_prune::onnx::{self, ExternalData, SaveOptions};
use onnx_prune::rewrite::{self, PassOptions};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "onnx-prune",
    version,
    about = "Make convolutional ONNX models physically smaller",
    long_about = "Make convolutional ONNX models physically smaller.\n\n\
        Usage forms:\n  onnx-prune IN.onnx -o OUT.onnx --target-flops 0.5 [--data calib/]\n  \
        onnx-prune inspect MODEL [--json]\n  onnx-prune simplify IN -o OUT [--fold-bn]",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    prune: PruneArgs,
}

/// The top-level form: prune IN to a MAC budget.
#[derive(Args)]
struct PruneArgs {
    /// Input model
    input: Option<PathBuf>,
    /// Output model
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Fraction of the input's MACs the output may keep (e.g. 0.5)
    #[arg(long)]
    target_flops: Option<f64>,
    /// Calibration/validation data
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a summary of a model: ops, inputs/outputs, params, MACs, top layers
    Inspect {
        model: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// Number of top layers by MACs to list
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Output-preserving simplification: constant folding, Identity/Dropout removal,
    /// dead-code elimination, optional BatchNorm folding
    Simplify {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Fold BatchNormalization into the preceding Conv
        #[arg(long)]
        fold_bn: bool,
        /// Where tensor data goes: keep (as in the input), all (>= 1 KiB to OUT.data), none
        #[arg(long, default_value = "keep", value_parser = ["keep", "all", "none"])]
        external_data: String,
        #[command(flatten)]
        shapes: ShapeArgs,
    },
    /// Run two models on the same seeded random inputs (tract) and print how far their outputs
    /// are apart: max |a-b| and max |a-b| / max(max|a|, 1)
    Compare(CompareArgs),
}

#[derive(Args)]
struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of random input sets
    #[arg(long, default_value_t = 3)]
    runs: u64,
    /// Fail (exit 1) when the relative difference exceeds this
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shapes: ShapeArgs,
}

#[derive(Args)]
struct ShapeArgs {
    /// Fix an input's shape, e.g. input=1x3x224x224 (repeatable). Unnamed batch dims default to 1
    #[arg(long = "input-shape", value_name = "NAME=DIMS", value_parser = parse_input_shape)]
    input_shape: Vec<(String, Vec<i64>)>,
}

impl ShapeArgs {
    fn map(&self) -> HashMap<String, Vec<i64>> {
        self.input_shape.iter().cloned().collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ToleranceExceeded>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Some(Cmd::Inspect {
            model,
            json,
            top,
            shapes,
        }) => inspect(&model, json, top, &shapes.map()),
        Some(Cmd::Simplify {
            input,
            output,
            fold_bn,
            external_data,
            shapes,
        }) => simplify(&input, &output, fold_bn, &external_data, &shapes.map()),
        Some(Cmd::Compare(c)) => compare(c),
        None => {
            let p = cli.prune;
            let Some(input) = p.input else {
                bail!("no input model given; see `onnx-prune --help`");
            };
            if p.output.is_none() {
                bail!("missing -o OUT.onnx");
            }
            match p.target_flops {
                None => bail!("missing --target-flops R (fraction of MACs to keep, e.g. 0.5)"),
                Some(r) if !(r > 0.0 && r <= 1.0) => {
                    bail!("--target-flops must be in (0, 1], got {r}")
                }
                Some(_) => {}
            }
            let _ = onnx::load(&input)?;
            let _ = p.data;
            bail!(
                "pruning is not available in this build yet (channel surgery and search are still being built); \
                 `inspect` and `simplify` work"
            )
        }
    }
}

fn dims_str(d: &[Dim]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn inspect(
    path: &Path,
    as_json: bool,
    top: usize,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let model = onnx::load(path)?;
    let a = analysis::infer(&model, ShapeMode::Bound, shapes)
        .with_context(|| path.display().to_string())?;
    let cost = analysis::cost(&model, &a).map_err(|e| e.in_file(path))?;
    let g = &model.graph;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for (_, n) in g.live_nodes() {
        let key = if n.is_standard() {
            n.op_type.clone()
        } else {
            format!("{}::{}", n.domain, n.op_type)
        };
        *ops.entry(key).or_default() += 1;
    }
    let mut unknown: Vec<String> = a
        .unknown
        .iter()
        .map(|&id| {
            let n = g.node(id);
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            }
        })
        .collect();
    unknown.sort();
    unknown.dedup();
    let mut ranked = cost.per_node.clone();
    ranked.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    ranked.truncate(top);
    let io = |v: onnx_prune::ir::ValueId| {
        let val = g.value(v);
        let dtype = val
            .declared_elem()
            .map(|d| d.name())
            .unwrap_or_else(|| "?".into());
        let declared = val
            .declared_shape()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        let analysed = a
            .fact(v)
            .shape
            .as_deref()
            .map(dims_str)
            .unwrap_or_else(|| "?".into());
        (val.name.clone(), dtype, declared, analysed)
    };
    let inputs: Vec<_> = g
        .inputs
        .iter()
        .filter(|&&v| matches!(g.value(v).def, ValueDef::Input))
        .map(|&v| io(v))
        .collect();
    let outputs: Vec<_> = g.outputs.iter().map(|&v| io(v)).collect();
    let nodes = g.live_nodes().count();
    let opset = model.opset();
    let producer = producer(&model);
    if as_json {
        let j = json!({
            "file": path.display().to_string(),
            "ir_version": model.ir_version,
            "opset": opset,
            "producer": producer,
            "nodes": nodes,
            "params": cost.params,
            "macs": cost.macs,
            "ops": ops,
            "unknown_ops": unknown,
            "inputs": inputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(n, t, d, s)| json!({"name": n, "dtype": t, "shape": d, "analysed_shape": s})).collect::<Vec<_>>(),
            "top_layers": ranked.iter().map(|&(id, m)| {
                let n = g.node(id);
                json!({"name": n.name, "op": n.op_type, "macs": m,
                       "output_shape": n.outputs.first().copied().flatten().and_then(|v| a.fact(v).shape.as_deref().map(dims_str))})
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model:    {}", path.display());
    println!(
        "format:   IR {}, opset {}{}",
        model.ir_version,
        opset,
        producer
            .map(|p| format!(", produced by {p}"))
            .unwrap_or_default()
    );
    for (n, t, d, s) in &inputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("input:    {n}  {t} {d}{note}");
    }
    for (n, t, d, s) in &outputs {
        let note = if d != s {
            format!("  (analysed as {s})")
        } else {
            String::new()
        };
        println!("output:   {n}  {t} {d}{note}");
    }
    println!("nodes:    {nodes}");
    println!("params:   {}", group_digits(cost.params));
    println!("MACs:     {}", group_digits(cost.macs));
    let hist: Vec<String> = {
        let mut v: Vec<_> = ops.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(k, c)| format!("{k} {c}")).collect()
    };
    println!("ops:      {}", hist.join(", "));
    if !unknown.is_empty() {
        println!(
            "unknown:  {} (carried unchanged; their MACs count as 0)",
            unknown.join(", ")
        );
    }
    if !ranked.is_empty() {
        println!("top layers by MACs:");
        for (i, &(id, m)) in ranked.iter().enumerate() {
            let n = g.node(id);
            let shape = n
                .outputs
                .first()
                .copied()
                .flatten()
                .and_then(|v| a.fact(v).shape.as_deref().map(dims_str))
                .unwrap_or_default();
            let pct = if cost.macs > 0 {
                100.0 * m as f64 / cost.macs as f64
            } else {
                0.0
            };
            println!(
                "  {:>2}. {:<40} {:<14} {:<18} {:>15} {:>5.1}%",
                i + 1,
                n.name,
                n.op_type,
                shape,
                group_digits(m),
                pct
            );
        }
    }
    Ok(())
}

fn producer(model: &Model) -> Option<String> {
    onnx::producer(model)
}

fn simplify(
    input: &Path,
    output: &Path,
    fold_bn: bool,
    external: &str,
    shapes: &HashMap<String, Vec<i64>>,
) -> Result<()> {
    let mut model = onnx::load(input)?;
    rewrite::set_input_shapes(&mut model, shapes)?;
    let rep =
        rewrite::simplify(&mut model, &PassOptions { fold_bn }).map_err(|e| e.in_file(input))?;
    let external = match external {
        "all" => ExternalData::All,
        "none" => ExternalData::None,
        _ => ExternalData::Keep,
    };
    let protect = input_files(input);
    onnx::save(&model, output, &SaveOptions { external }, &protect)?;
    let detail: Vec<String> = rep
        .rewrites
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    eprintln!(
        "simplified {} -> {}: {} -> {} nodes in {} round(s){}",
        input.display(),
        output.display(),
        rep.nodes_before,
        rep.nodes_after,
        rep.rounds,
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        }
    );
    Ok(())
}

/// The input model and its external data files: never to be overwritten.
fn input_files(input: &Path) -> Vec<PathBuf> {
    let mut v = vec![input.to_path_buf()];
    if let Some(name) = input.file_name() {
        v.push(input.with_file_name(format!("{}.data", name.to_string_lossy())));
    }
    v
}

#[derive(Debug)]
struct ToleranceExceeded(String);
impl std::fmt::Display for ToleranceExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ToleranceExceeded {}

#[cfg(feature = "tract")]
fn compare(c: CompareArgs) -> Result<()> {
    use onnx_prune::eval;
    let ma = onnx::load(&c.a)?;
    let shapes = eval::input_shapes(&ma, &c.shapes.map()).map_err(|e| e.in_file(&c.a))?;
    let mut worst = eval::Diff::default();
    for r in 0..c.runs {
        let inputs = eval::random_inputs(&shapes, c.seed.wrapping_add(r));
        let oa = eval::tract_rt::run(&c.a, &inputs)?;
        let ob = eval::tract_rt::run(&c.b, &inputs)?;
        let d = eval::compare(&oa, &ob)?;
        worst.max_abs = worst.max_abs.max(d.max_abs);
        worst.max_rel = worst.max_rel.max(d.max_rel);
    }
    if c.json {
        println!(
            "{}",
            json!({"runtime": "tract", "runs": c.runs, "max_abs_diff": worst.max_abs, "max_rel_diff": worst.max_rel})
        );
    } else {
        println!(
            "tract, {} random input set(s): max |a-b| = {:.3e}, max relative = {:.3e}",
            c.runs, worst.max_abs, worst.max_rel
        );
    }
    if worst.max_rel > c.tolerance {
        return Err(ToleranceExceeded(format!(
            "outputs differ: relative {:.3e} > tolerance {:.1e}",
            worst.max_rel, c.tolerance
        ))
        .into());
    }
    Ok(())
}

#[cfg(not(feature = "tract"))]
fn compare(_: CompareArgs) -> Result<()> {
    bail!("this build has no runtime: rebuild with the `tract` feature")
}
