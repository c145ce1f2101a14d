#!/usr/bin/env bash
# The generality table (issue #23): for every .onnx in the given folders, one onnx-prune binary
# prunes it data-free to --target-flops 0.5 (--method l1) and inspects its groups; prints a
# Markdown row per model: exit code, MACs ratio, share of MACs in declined groups, the first
# decline reason (and the error on a failure). Optionally verifies the pruned model against the
# masked original (tract, 3 random input sets).
#   tools/model_table.sh BIN DIR... [> table.md]
# Models come from tools/export_models.py, ../shared/models, or anywhere else. A model whose
# input has dynamic spatial dims gets them from a sidecar file `MODEL.onnx.input-shape` holding
# the `--input-shape` value (e.g. `x=1x3x64x96`). Not part of CI.
set -uo pipefail
bin=$(realpath "${1:?usage: tools/model_table.sh BIN DIR...}")
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| model | exit | MACs after / before | declined share of MACs | verify (max diff / spread) | first decline or error |"
echo "|---|---|---|---|---|---|"
find "$@" -name '*.onnx' ! -name '*.pruned.onnx' | sort | while read -r m; do
  n=$(basename "$m" .onnx)
  shape=()
  [ -f "$m.input-shape" ] && shape=(--input-shape "$(cat "$m.input-shape")")
  err=$("$bin" "$m" -o "$work/p.onnx" --target-flops 0.5 --method l1 --emit-plan "$work/plan.json" \
    --report "$work/r.json" "${shape[@]}" 2>&1 >/dev/null)
  code=$?
  ratio="—"
  verify="—"
  if [ $code -eq 0 ]; then
    ratio=$(python3 -c "import json; r=json.load(open('$work/r.json')); print('%.3f' % (r['macs_after']/r['macs_before']))")
    verify=$("$bin" verify "$m" "$work/p.onnx" --plan "$work/plan.json" "${shape[@]}" 2>&1 | tail -1 |
      sed -n 's/.*relative to the output.s spread = \([0-9.e+-]*\).*/\1/p')
    [ -n "$verify" ] || verify="failed"
  fi
  decl=$("$bin" inspect "$m" --groups --json "${shape[@]}" 2>/dev/null | python3 -c "
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print('—|inspect failed'); sys.exit()
g = d['groups']
tot = d['macs'] if isinstance(d['macs'], (int, float)) else 0
dec = [x for x in g if x['declined'] and not x['declined'].startswith('graph output')]
share = sum(x['macs'] for x in dec) / tot if tot else 0
print('%.1f%%|%s' % (100 * share, (dec[0]['declined'][:100] if dec else '').replace('|', '/')))
")
  [ $code -eq 0 ] || decl="${decl%%|*}|$(echo "$err" | tail -1 | cut -c1-120 | tr '|' '/')"
  echo "| $n | $code | $ratio | ${decl%%|*} | $verify | ${decl#*|} |"
done
