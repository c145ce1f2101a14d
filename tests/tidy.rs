//! Source layout rules (as rust-analyzer's tidy tests): checked on the source tree, so a change
//! that breaks one fails CI with the file named.
//! - Each op type's name is written (as a string literal) in at most two files under `src/`:
//!   its family's file in `src/ir/ops/` and its burn forward in `src/net/ops/`. Other passes
//!   use `ir::ops::names`, the registry rows and their descriptors. The test-model builder
//!   (`src/onnx/builder.rs`) is exempt.
//! - No source file over 700 lines, in the library (`src/`) and beside it (`tests/`, `benches/`,
//!   `examples/`; a long test file becomes a folder with `main.rs` and modules).
//! - `eval` (the runtimes) and `learn` (training) do not import each other.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `.rs` files under the given folders of the repository, with their text.
fn files_under(dirs: &[&str]) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    for d in dirs {
        rust_files(&root.join(d), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The library's source files.
fn sources() -> Vec<(String, String)> {
    files_under(&["src"])
}

#[test]
fn each_op_name_is_written_in_at_most_two_source_files() {
    let files = sources();
    let mut over = vec![];
    for name in onnx_prune::ir::ops::known_ops() {
        let lit = format!("\"{name}\"");
        let hits: Vec<&str> = files
            .iter()
            .filter(|(p, src)| p != "src/onnx/builder.rs" && src.contains(&lit))
            .map(|(p, _)| p.as_str())
            .collect();
        if hits.len() > 2 {
            over.push(format!("{name}: {}", hits.join(", ")));
        }
    }
    assert!(
        over.is_empty(),
        "op names written in more than two files (use ir::ops::names or the registry):\n{}",
        over.join("\n")
    );
}

#[test]
fn no_source_file_is_over_700_lines() {
    let long: Vec<String> = files_under(&["src", "tests", "benches", "examples"])
        .into_iter()
        .filter(|(_, s)| s.lines().count() > 700)
        .map(|(p, s)| format!("{p}: {} lines", s.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_runtimes_and_the_learning_module_do_not_import_each_other() {
    let mut bad = vec![];
    for (p, src) in sources() {
        let other = if p.starts_with("src/eval/") {
            "crate::learn"
        } else if p.starts_with("src/learn/") {
            "crate::eval"
        } else {
            continue;
        };
        if src.contains(other) {
            bad.push(format!("{p} uses {other}"));
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}
