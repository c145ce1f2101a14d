#!/usr/bin/env bash
# Training speed on a GPU (issue #20, item 3): the `trainspeed` benchmark on burn-wgpu, run on a
# lent device machine, which has no network and takes at most 64 MiB of carried files.
#
#   tools/gpu_trainspeed.sh stage   # here: build the bench with --features wgpu, strip it, and
#                                   # stage it with the models in gpu-carry/ (git-ignored)
#   gpu-carry/run.sh                # there (carry: ["gpu-carry"]): prints the table
#
# The table's images/s can be set against the GPU's peak: a training step costs about
# 3 x forward MACs x 2 FLOPs per image (resnet20 40.6 M, resnet56 125.5 M MACs per image),
# so images/s x 6 x MACs / 1e12 is the TFLOP/s the step reaches (H200 FP32: ~67 TFLOP/s).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-stage}" in
stage)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onnx-prune/target}"
  cargo build --release --features wgpu --bench trainspeed --bin onnx-prune
  bench=$(ls -t "$CARGO_TARGET_DIR"/release/deps/trainspeed-* | grep -v '\.d$' | head -1)
  rm -rf gpu-carry && mkdir -p gpu-carry/shared/models/cifar10 gpu-carry/shared/models/zoo
  cp ../shared/models/cifar10/resnet20.onnx ../shared/models/cifar10/resnet56.onnx gpu-carry/shared/models/cifar10/
  cp ../shared/models/zoo/mobilenet_v2.onnx gpu-carry/shared/models/zoo/
  "$CARGO_TARGET_DIR"/release/onnx-prune ../shared/models/cifar10/resnet56.onnx \
    -o gpu-carry/shared/models/cifar10/resnet56_p50.onnx --target-flops 0.5
  strip -o gpu-carry/trainspeed "$bench"
  cat > gpu-carry/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the device machine: burn-wgpu training speed, then the CPU (flex) rows for scale.
set -uo pipefail
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || true
export ONNX_PRUNE_SHARED="$PWD/shared"
./trainspeed --no-torch --device wgpu --steps 10
./trainspeed --no-torch --models resnet20,resnet56 --steps 3
RUN
  chmod +x gpu-carry/run.sh gpu-carry/trainspeed
  du -sh gpu-carry
  echo "carry: [\"gpu-carry\"], command: gpu-carry/run.sh"
  ;;
*)
  echo "usage: $0 stage" >&2
  exit 2
  ;;
esac
