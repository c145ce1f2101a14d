//! Data-driven checks over real models (`tests/data/models.tsv`): MAC/param counts equal the
//! independent counts recorded there, and `simplify` (with BN folding) preserves outputs in
//! tract and in onnxruntime, passes `onnx.checker` (full check) and keeps dynamic batch dims.

mod common;
use onnx_prune::analysis::{self, ShapeMode};
use onnx_prune::onnx::{self, ExternalData, SaveOptions};
use onnx_prune::rewrite::{self, PassOptions};
use std::path::PathBuf;

struct Case {
    path: PathBuf,
    shapes: Vec<String>,
    macs: u64,
    params: u64,
    prune_tol: f64,
    /// What the comparisons feed the model (column 6: `normal`, the default, or `text`).
    inputs: common::Inputs,
}

/// The table rows whose files are present (rows needing ../shared or the registry models are
/// skipped, with a printed reason, when those are absent).
fn cases() -> Vec<Case> {
    let shared = common::shared();
    let extra = common::extra_models();
    let text = std::fs::read_to_string(common::repo().join("tests/data/models.tsv")).unwrap();
    let mut out = vec![];
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let path = if let Some(n) = f[0].strip_prefix("extra:") {
            match &extra {
                Some(d) => d.join(n),
                None => continue,
            }
        } else if let Some(n) = f[0].strip_prefix("repo:") {
            common::repo().join(n)
        } else {
            match &shared {
                Some(d) => d.join(f[0]),
                None => continue,
            }
        };
        let shapes = if f[1] == "-" {
            vec![]
        } else {
            f[1].split(',').map(String::from).collect()
        };
        out.push(Case {
            path,
            shapes,
            macs: f[2].parse().unwrap(),
            params: f[3].parse().unwrap(),
            prune_tol: f.get(4).map(|t| t.parse().unwrap()).unwrap_or(1e-5),
            inputs: match f.get(5).copied() {
                None | Some("normal") => common::Inputs::Normal,
                Some("text") => common::Inputs::Text,
                Some(x) => panic!("models.tsv: unknown inputs '{x}'"),
            },
        });
    }
    out
}

#[test]
fn macs_and_params_match_independent_counts() {
    let cases = cases();
    for c in &cases {
        let mut cmd = common::bin();
        cmd.arg("inspect").arg(&c.path).arg("--json");
        for s in &c.shapes {
            cmd.args(["--input-shape", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            c.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            j["macs"].as_u64(),
            Some(c.macs),
            "MACs of {}",
            c.path.display()
        );
        assert_eq!(
            j["params"].as_u64(),
            Some(c.params),
            "params of {}",
            c.path.display()
        );
        println!("{}: {} MACs, {} params", c.path.display(), c.macs, c.params);
    }
    assert!(!cases.is_empty());
}

/// The table itself is re-derived: `tools/count_macs.py` (shapes as onnxruntime executes
/// them, its own MAC rules) gives every row's MACs and params.
#[test]
fn the_table_matches_the_independent_counter() {
    if !common::python_ok() {
        return;
    }
    let cases = cases();
    for c in &cases {
        let out = std::process::Command::new("python3")
            .arg(common::repo().join("tools/count_macs.py"))
            .arg(&c.path)
            .args(&c.shapes)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "count_macs.py {}: {}",
            c.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (j["macs"].as_u64(), j["params"].as_u64()),
            (Some(c.macs), Some(c.params)),
            "tools/count_macs.py disagrees with tests/data/models.tsv on {}",
            c.path.display()
        );
    }
    println!("{} rows re-derived by tools/count_macs.py", cases.len());
    assert!(!cases.is_empty());
}

#[test]
fn simplify_preserves_outputs_in_tract_and_onnxruntime() {
    let py = common::python_ok();
    let dir = tempfile::tempdir().unwrap();
    for c in cases() {
        let mut m = onnx::load(&c.path).unwrap();
        let before = m.graph.live_nodes().count();
        rewrite::simplify(&mut m, &PassOptions { fold_bn: true }).unwrap();
        m.graph.check().unwrap();
        let out = dir.path().join(c.path.file_name().unwrap());
        onnx::save(
            &m,
            &out,
            &SaveOptions {
                external: ExternalData::Keep,
            },
            std::slice::from_ref(&c.path),
        )
        .unwrap();
        // The cost of the simplified model is unchanged.
        let m2 = onnx::load(&out).unwrap();
        let shapes = common::shape_map(&c.shapes);
        let a = analysis::infer(&m2, ShapeMode::Bound, &shapes).unwrap();
        assert_eq!(
            analysis::cost(&m2, &a).unwrap().macs,
            c.macs,
            "MACs changed by simplify: {}",
            c.path.display()
        );

        let t = common::tract_diff_on(&c.path, &out, &c.shapes, None, c.inputs);
        assert!(t <= 1e-5, "{}: tract relative diff {t:e}", c.path.display());
        let mut line = format!(
            "{}: {} -> {} nodes, tract diff {t:.2e}",
            c.path.display(),
            before,
            m2.graph.live_nodes().count()
        );
        if py {
            let (o, checker) = common::ort_compare_on(&c.path, &out, &c.shapes, c.inputs);
            assert!(
                o <= 1e-5,
                "{}: onnxruntime relative diff {o:e}",
                c.path.display()
            );
            assert_eq!(checker, "ok", "{}: onnx.checker", c.path.display());
            line += &format!(", onnxruntime diff {o:.2e}, checker ok");
        }
        println!("{line}");
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn folding_keeps_dynamic_batch() {
    // Models with a symbolic batch: after simplify they must still run at batch 3.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = vec![common::repo().join("models/tiny_resnet.onnx")];
    if let Some(s) = common::shared() {
        paths.push(s.join("models/cifar10/resnet20.onnx"));
    }
    for p in paths {
        let mut m = onnx::load(&p).unwrap();
        rewrite::simplify(&mut m, &PassOptions { fold_bn: true }).unwrap();
        let out = dir.path().join("s.onnx");
        onnx::save(&m, &out, &SaveOptions::default(), &[]).unwrap();
        let d = common::tract_diff(&p, &out, &[], Some(3));
        assert!(d <= 1e-5, "{}: batch-3 diff {d:e}", p.display());
    }
}

/// `--target-flops 0.5 --method l1` on every real model: MACs within [48%, 50%] of the input,
/// `verify` passes, the pruned model equals the masked original in onnxruntime and passes the
/// checker, and `apply` with the emitted plan reproduces the same file.
#[test]
fn prune_to_half_the_macs_and_verify() {
    use onnx_prune::search::datafree::Pruner;
    use onnx_prune::search::plan::Plan;
    let py = common::python_ok();
    let dir = tempfile::tempdir().unwrap();
    for c in cases() {
        let (out, plan, out2) = (
            dir.path().join("p.onnx"),
            dir.path().join("p.json"),
            dir.path().join("q.onnx"),
        );
        let mut cmd = common::bin();
        cmd.arg(&c.path)
            .arg("-o")
            .arg(&out)
            .args(["--target-flops", "0.5", "--method", "l1", "--emit-plan"])
            .arg(&plan);
        for s in &c.shapes {
            cmd.args(["--input-shape", s]);
        }
        let st = cmd.output().unwrap();
        assert!(
            st.status.success(),
            "{}: {}",
            c.path.display(),
            String::from_utf8_lossy(&st.stderr)
        );
        let m = onnx::load(&out).unwrap();
        let a = analysis::infer(&m, ShapeMode::Bound, &common::shape_map(&c.shapes)).unwrap();
        let macs = analysis::cost(&m, &a).unwrap().macs;
        let r = macs as f64 / c.macs as f64;
        assert!(
            (0.48..=0.5).contains(&r),
            "{}: MAC ratio {r}",
            c.path.display()
        );

        let mut v = common::bin();
        v.arg("verify")
            .arg(&c.path)
            .arg(&out)
            .arg("--plan")
            .arg(&plan)
            .arg("--tolerance")
            .arg(c.prune_tol.to_string());
        for s in &c.shapes {
            v.args(["--input-shape", s]);
        }
        let vs = v.output().unwrap();
        assert!(
            vs.status.success(),
            "{}: verify: {}{}",
            c.path.display(),
            String::from_utf8_lossy(&vs.stdout),
            String::from_utf8_lossy(&vs.stderr)
        );

        let mut line = format!(
            "{}: MACs ratio {r:.4}, {}",
            c.path.display(),
            String::from_utf8_lossy(&vs.stdout).trim()
        );
        if py {
            let orig = onnx::load(&c.path).unwrap();
            let p = Pruner::new(&orig, &common::shape_map(&c.shapes)).unwrap();
            let plan_v: Plan =
                serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
            let masked = p.masked(&plan_v.to_keep(&p).unwrap()).unwrap();
            let mp = dir.path().join("masked.onnx");
            onnx::save(&masked, &mp, &SaveOptions::default(), &[]).unwrap();
            let (o, checker) = common::ort_compare_on(&mp, &out, &c.shapes, c.inputs);
            assert!(
                o <= c.prune_tol,
                "{}: onnxruntime diff {o:e}",
                c.path.display()
            );
            assert_eq!(checker, "ok", "{}", c.path.display());
            line += &format!("; onnxruntime diff {o:.2e}, checker ok");
        }
        let mut ap = common::bin();
        ap.arg("apply")
            .arg(&c.path)
            .arg("--plan")
            .arg(&plan)
            .arg("-o")
            .arg(&out2);
        for s in &c.shapes {
            ap.args(["--input-shape", s]);
        }
        assert!(ap.output().unwrap().status.success());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&out2).unwrap(),
            "{}: apply differs",
            c.path.display()
        );
        // Global allocation: same MAC window, and verify passes.
        let mut gl = common::bin();
        gl.arg(&c.path)
            .arg("-o")
            .arg(&out)
            .args([
                "--target-flops",
                "0.5",
                "--allocation",
                "global",
                "--emit-plan",
            ])
            .arg(&plan);
        for s in &c.shapes {
            gl.args(["--input-shape", s]);
        }
        assert!(gl.output().unwrap().status.success());
        let m = onnx::load(&out).unwrap();
        let a = analysis::infer(&m, ShapeMode::Bound, &common::shape_map(&c.shapes)).unwrap();
        let rg = analysis::cost(&m, &a).unwrap().macs as f64 / c.macs as f64;
        assert!(
            (0.48..=0.5).contains(&rg),
            "{}: global MAC ratio {rg}",
            c.path.display()
        );
        let mut v = common::bin();
        v.arg("verify")
            .arg(&c.path)
            .arg(&out)
            .arg("--plan")
            .arg(&plan)
            .arg("--tolerance")
            .arg(c.prune_tol.to_string());
        for s in &c.shapes {
            v.args(["--input-shape", s]);
        }
        assert!(
            v.output().unwrap().status.success(),
            "{}: global verify",
            c.path.display()
        );
        line += &format!("; global {rg:.4} verified");
        println!("{line}");
    }
}
