#!/usr/bin/env bash
# Behaviour fingerprint for restructuring commits (#24): runs one onnx-prune binary over every
# model in ../shared/models and models/ and prints a sha256 manifest of what it wrote:
#   inspect --groups --json; the data-free job (--method l1, uniform and global) with its emitted
#   plan; apply of that plan; shrink; and, on the shipped digits model with its fixture, the
#   data job (search, least squares, fine-tuning) at a fixed seed and step count, with its plan.
# The data job runs on tract (--runtime tract): its validation scores steer the search and the
# re-ranking, and ORT and tract differ in the last bits, so a machine with or without ONNX Runtime
# would otherwise give another manifest. Reports are left out (they hold wall times). Two
# binaries behave the same when their manifests are identical:
#   tools/identity.sh target/release/onnx-prune > before.txt   # on the old commit
#   tools/identity.sh target/release/onnx-prune > after.txt    # on the new one
#   diff before.txt after.txt && echo identical
set -euo pipefail
bin=$(realpath "${1:?usage: tools/identity.sh BIN [SHARED]}")
cd "$(dirname "$0")/.."
shared=${2:-../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t models < <( (find "$shared/models" -name '*.onnx' 2>/dev/null; ls models/*.onnx) | sort)
[ "${#models[@]}" -gt 0 ] || { echo "no models found" >&2; exit 1; }
for m in "${models[@]}"; do
  n=$(echo "$m" | sed 's|^\.\./||; s|/|_|g')
  d="$work/$n"
  mkdir -p "$d"
  "$bin" inspect "$m" --groups --json >"$d/groups.json" 2>/dev/null || echo "inspect failed" >"$d/groups.json"
  for alloc in uniform global; do
    if "$bin" "$m" -o "$d/$alloc.onnx" --target-flops 0.5 --method l1 --allocation "$alloc" \
      --emit-plan "$d/$alloc.plan.json" >/dev/null 2>&1; then
      "$bin" apply "$m" --plan "$d/$alloc.plan.json" -o "$d/$alloc.apply.onnx" >/dev/null 2>&1 ||
        echo "apply failed" >"$d/$alloc.apply.onnx"
    else
      echo "prune failed" >"$d/$alloc.onnx"
    fi
  done
  "$bin" shrink "$m" -o "$d/shrink.onnx" >/dev/null 2>&1 || echo "shrink failed" >"$d/shrink.onnx"
done
d="$work/digits_job"
mkdir -p "$d"
"$bin" models/digits_cnn.onnx -o "$d/job.onnx" --target-flops 0.5 --data fixtures/digits_train.npz \
  --no-augment --seed 7 --episodes 6 --finetune-steps 20 --runtime tract --emit-plan "$d/job.plan.json" \
  >/dev/null 2>&1 || echo "job failed" >"$d/job.onnx"
(cd "$work" && find . -type f | sort | xargs sha256sum)
