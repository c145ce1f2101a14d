//! Bad input: a one-line error naming the file/node, exit code 2, no panic; inputs are never
//! modified; outputs are written atomically.

mod common;
use onnx_prune::onnx::{builder, proto as pb};
use prost::Message;
use std::path::Path;

/// Runs the CLI, expects exit code 2 and a single-line error containing every `needle`.
fn expect_error(args: &[&str], needles: &[&str]) -> String {
    let out = common::bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "args {args:?}: expected exit 2, stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    for n in needles {
        assert!(
            err.contains(n),
            "error for {args:?} should mention '{n}': {err}"
        );
    }
    err
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn tiny() -> pb::ModelProto {
    builder::tiny_resnet(1)
}

#[test]
fn zero_byte_file() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "empty.onnx", b"");
    expect_error(&["inspect", &p], &["empty.onnx", "empty"]);
    expect_error(
        &["simplify", &p, "-o", &format!("{p}.out")],
        &["empty.onnx"],
    );
    assert!(!Path::new(&format!("{p}.out")).exists());
}

#[test]
fn garbage_file() {
    let d = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let p = write(d.path(), "garbage.onnx", &bytes);
    expect_error(&["inspect", &p], &["garbage.onnx"]);
    let p = write(d.path(), "text.onnx", b"this is not a model at all\n");
    expect_error(&["inspect", &p], &["text.onnx"]);
}

#[test]
fn truncated_file() {
    let d = tempfile::tempdir().unwrap();
    let full = tiny().encode_to_vec();
    for cut in [full.len() / 2, full.len() - 3, 17] {
        let p = write(d.path(), "trunc.onnx", &full[..cut]);
        expect_error(&["inspect", &p], &["trunc.onnx"]);
    }
}

#[test]
fn missing_file_and_directory() {
    expect_error(
        &["inspect", "/nonexistent/model.onnx"],
        &["/nonexistent/model.onnx"],
    );
    let d = tempfile::tempdir().unwrap();
    expect_error(&["inspect", &d.path().to_string_lossy()], &["directory"]);
}

#[test]
fn unsupported_ir_version() {
    let d = tempfile::tempdir().unwrap();
    let mut m = tiny();
    m.ir_version = Some(99);
    let p = write(d.path(), "future.onnx", &m.encode_to_vec());
    expect_error(
        &["inspect", &p],
        &["future.onnx", "unsupported IR version 99"],
    );
    m.ir_version = None;
    let p = write(d.path(), "noir.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["noir.onnx", "ir_version"]);
}

#[test]
fn missing_external_data() {
    let d = tempfile::tempdir().unwrap();
    let mut m = tiny();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    let name = t.name.clone().unwrap();
    t.raw_data = None;
    t.data_location = Some(1);
    t.external_data = vec![pb::StringStringEntryProto {
        key: Some("location".into()),
        value: Some("weights.bin".into()),
    }];
    let p = write(d.path(), "ext.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["ext.onnx", &name, "weights.bin"]);
    // A location escaping the model's directory is refused.
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    t.external_data[0].value = Some("../weights.bin".into());
    let p = write(d.path(), "ext2.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["ext2.onnx", "relative path"]);
    // A range beyond the end of the file.
    std::fs::write(d.path().join("short.bin"), [0u8; 8]).unwrap();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    t.external_data[0].value = Some("short.bin".into());
    t.external_data.push(pb::StringStringEntryProto {
        key: Some("length".into()),
        value: Some("4096".into()),
    });
    let p = write(d.path(), "ext3.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["ext3.onnx", "short.bin"]);
}

#[test]
fn structural_errors_name_the_node() {
    let d = tempfile::tempdir().unwrap();
    let mut m = tiny();
    let g = m.graph.as_mut().unwrap();
    g.node[3].input[0] = "nowhere".into();
    let node_name = g.node[3].name.clone().unwrap();
    let p = write(d.path(), "dangling.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["dangling.onnx", &node_name, "nowhere"]);

    let mut m = tiny();
    let g = m.graph.as_mut().unwrap();
    let first_out = g.node[0].output[0].clone();
    g.node[1].output[0] = first_out.clone();
    let p = write(d.path(), "dup.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["dup.onnx", "defined twice"]);

    // Data length not matching dims.
    let mut m = tiny();
    let t = &mut m.graph.as_mut().unwrap().initializer[0];
    t.dims[0] += 1;
    let p = write(d.path(), "badlen.onnx", &m.encode_to_vec());
    expect_error(&["inspect", &p], &["badlen.onnx", "bytes"]);
}

#[test]
fn shapes_that_cannot_be_inferred() {
    let d = tempfile::tempdir().unwrap();
    // Conv whose weight expects more input channels than the tensor has.
    let mut b = builder::ModelBuilder::new(17, 0);
    let x = b.input("x", &[1, 3, 8, 8]);
    let y = b.conv(&x, 4, 8, 3, 1, 1);
    b.graph.node.last_mut().unwrap().name = Some("bad_conv".into());
    b.graph.node.last_mut().unwrap().output[0] = "y".into();
    let _ = y;
    b.output("y", &[1, 8, 8, 8]);
    let p = write(d.path(), "badconv.onnx", &b.to_bytes());
    expect_error(&["inspect", &p], &["badconv.onnx", "bad_conv", "channels"]);

    // A dynamic spatial dim without --input-shape: the error says how to fix it.
    let mut b = builder::ModelBuilder::new(17, 0);
    b.graph
        .input
        .push(builder::value_info("img", 1, &[1, 3, 8, 8]));
    if let Some(pb::type_proto::Value::TensorType(t)) = b.graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim[2].value = Some(
            pb::tensor_shape_proto::dimension::Value::DimParam("H".into()),
        );
    }
    b.conv("img", 3, 4, 3, 1, 1);
    b.rename_last_output("out");
    b.output("out", &[1, 4, 8, 8]);
    let p = write(d.path(), "dyn.onnx", &b.to_bytes());
    expect_error(&["inspect", &p], &["dyn.onnx", "img", "--input-shape"]);
    let ok = common::bin()
        .args(["inspect", &p, "--json", "--input-shape", "img=1x3x16x8"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let j: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(j["macs"].as_u64().unwrap(), 4 * 16 * 8 * 3 * 9);
    // Bad --input-shape values are usage errors.
    expect_error(&["inspect", &p, "--input-shape", "img=1x3x16"], &["rank"]);
    expect_error(
        &["inspect", &p, "--input-shape", "nope=1x3x16x8"],
        &["nope"],
    );
    expect_error(
        &["inspect", &p, "--input-shape", "img=1x3x16x9"],
        &["fixed to 8"],
    );
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn input_is_never_modified_and_output_is_atomic() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "in.onnx", &tiny().encode_to_vec());
    let before = snapshot(d.path());
    // Refuses to overwrite its input, leaving it intact.
    expect_error(&["simplify", &p, "-o", &p], &["refusing to overwrite"]);
    assert_eq!(snapshot(d.path()), before);
    // A normal run leaves the input as it was, writes the output, and no temporary files.
    let out = d.path().join("out.onnx");
    let st = common::bin()
        .args(["simplify", &p, "-o", &out.to_string_lossy(), "--fold-bn"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let after = snapshot(d.path());
    assert_eq!(
        after.len(),
        2,
        "unexpected files: {:?}",
        after.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(
        after.iter().find(|f| f.0 == "in.onnx").unwrap().1,
        before[0].1
    );
    // Output into a missing directory fails cleanly without leaving anything behind.
    expect_error(
        &[
            "simplify",
            &p,
            "-o",
            &d.path().join("no/such/dir/x.onnx").to_string_lossy(),
        ],
        &["no/such/dir"],
    );
    assert_eq!(snapshot(d.path()).len(), 2);
}

#[test]
fn top_level_prune_form_validates_and_respects_strict() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "in.onnx", &tiny().encode_to_vec());
    let out = d.path().join("out.onnx").to_string_lossy().into_owned();
    expect_error(
        &[&p, "-o", &out, "--target-flops", "1.5"],
        &["--target-flops"],
    );
    expect_error(&[&p, "-o", &out], &["--target-flops"]);
    expect_error(&[&p, "--target-flops", "0.5"], &["-o"]);
    assert!(!Path::new(&out).exists());
    let before = std::fs::read(&p).unwrap();
    let ok = common::bin()
        .args([&p, "-o", &out, "--target-flops", "0.5"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(Path::new(&out).exists());
    assert_eq!(std::fs::read(&p).unwrap(), before, "input modified");
    // An unreachable target: exit 0 with a note, or exit 1 with --strict.
    let soft = common::bin()
        .args([&p, "-o", &out, "--target-flops", "0.001"])
        .output()
        .unwrap();
    assert!(soft.status.success());
    assert!(String::from_utf8_lossy(&soft.stderr).contains("not reachable"));
    let strict = common::bin()
        .args([&p, "-o", &out, "--target-flops", "0.001", "--strict"])
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("not reachable"));
    // A plan for another model is refused with a clear message.
    let plan = d.path().join("plan.json");
    std::fs::write(&plan, r#"{"format":"onnx-prune-plan","version":1,"source":{"file":"x","macs":1},"groups":[{"key":"nope:3","channels":3,"keep":[0]}]}"#).unwrap();
    expect_error(
        &["apply", &p, "--plan", &plan.to_string_lossy(), "-o", &out],
        &["nope:3", "does not exist"],
    );
    std::fs::write(&plan, "{ not json").unwrap();
    expect_error(
        &["apply", &p, "--plan", &plan.to_string_lossy(), "-o", &out],
        &["plan.json"],
    );
}

/// Each flag that reads training or calibration data is refused without `--data` before
/// anything is read: exit 2, one line naming the flag and `--data`, no output written.
#[test]
fn flags_that_need_data_are_refused_without_it() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "in.onnx", &tiny().encode_to_vec());
    let out = d.path().join("out.onnx").to_string_lossy().into_owned();
    let steps = "--finetune-epochs/--finetune-steps";
    for (flags, needle) in [
        (&["--finetune-steps", "10"][..], steps),
        (&["--finetune-epochs", "1"], steps),
        (&["--feature-kd", "1"], "--feature-kd"),
        (&["--method", "ls"], "--method ls"),
        (&["--recover", "ls"], "--recover"),
        (&["--agent", "joint"], "--agent joint"),
    ] {
        let mut args = vec![p.as_str(), "-o", &out, "--target-flops", "0.5"];
        args.extend_from_slice(flags);
        let err = expect_error(&args, &[needle, "--data"]);
        assert!(!Path::new(&out).exists(), "{err}");
    }
}

#[test]
fn the_main_command_needs_an_input_and_an_output() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "in.onnx", &tiny().encode_to_vec());
    expect_error(&["--target-flops", "0.5"], &["no input model", "--help"]);
    // Checked before the other flags, with the input left as it was.
    let before = std::fs::read(&p).unwrap();
    expect_error(&[p.as_str(), "--target-flops", "0.5"], &["missing -o"]);
    expect_error(&[p.as_str()], &["missing -o"]);
    assert_eq!(std::fs::read(&p).unwrap(), before);
}
