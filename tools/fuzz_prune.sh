#!/usr/bin/env bash
# The whole-pipeline fuzz target (fuzz/fuzz_targets/prune.rs: decode -> simplify -> analyses ->
# allocation -> surgery -> encode) for SECONDS (default 600), seeded with the small real graphs
# at hand: the nine `light` models of the onnx wheel (IR 3, Caffe2-era nets) and the repository's
# own models and the builder's pattern models (examples/fuzz_seeds.rs). Needs
# `cargo install cargo-fuzz`; runs on the stable toolchain without a sanitizer
# (`-s none`: panics and aborts are what it looks for). Crashes land in fuzz/artifacts/prune/.
#
#   tools/fuzz_prune.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
corpus=fuzz/corpus/prune
mkdir -p "$corpus"
light=$(python3 -c "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend/test/data/light'))")
cp "$light"/light_*[a-z0-9].onnx models/*.onnx "$corpus"/
cargo run -q --release --example fuzz_seeds
cd fuzz
cargo fuzz run -s none -O prune corpus/prune -- -max_total_time="$secs" -rss_limit_mb=4096 -timeout=60
