#!/usr/bin/env bash
# Training on a GPU (issues #20 item 3 and #19 item 4), on a lent device machine that has no
# network and takes at most 64 MiB of carried files:
#   1. the `trainspeed` benchmark on burn-wgpu (resnet20, resnet56, resnet56 pruned to 0.5,
#      mobilenet_v2 at 224), beside PyTorch CUDA on the same graphs (tools/bench_train_torch.py
#      --device cuda; onnx2torch carried as a wheel, torch is the machine's own);
#   2. the main job on resnet56 at --target-flops 0.5 with its fine-tuning on the GPU, then
#      `onnx-prune eval` on test_10k_jpeg.tar.
#
#   tools/gpu_trainspeed.sh stage   # here: build with --features wgpu, strip and compress the two
#                                   # binaries, stage them with the models, the CIFAR-10 tars
#                                   # (gzip: the JPEG headers repeat), the Vulkan loader's .debs
#                                   # and the onnx2torch wheel in gpu-carry/ (git-ignored)
#   gpu-carry/run.sh [JOB_LIMIT]    # there (carry: ["gpu-carry"]): prints the tables and the
#                                   # job's result, copies logs and the report to $OUT
#
# images/s set against the GPU's peak: a training step costs about 3 x forward MACs x 2 FLOPs
# per image (resnet20 40.6 M, resnet56 125.5 M MACs per image), so images/s x 6 x MACs / 1e12
# is the TFLOP/s the step reaches (H200: ~67 TFLOP/s FP32 without tensor cores).
# mobilenet_v2 (14 MB of incompressible random weights) is exported there from torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-stage}" in
stage)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/onnx-prune/target}"
  cargo build --release --features wgpu --bench trainspeed --bin onnx-prune
  bench=$(ls -t "$CARGO_TARGET_DIR"/release/deps/trainspeed-* | grep -v '\.d$' | head -1)
  rm -rf gpu-carry && mkdir -p gpu-carry/shared/models/cifar10 gpu-carry/data gpu-carry/gl gpu-carry/whl
  cp ../shared/models/cifar10/resnet20.onnx ../shared/models/cifar10/resnet56.onnx gpu-carry/shared/models/cifar10/
  "$CARGO_TARGET_DIR"/release/onnx-prune ../shared/models/cifar10/resnet56.onnx \
    -o gpu-carry/shared/models/cifar10/resnet56_p50.onnx --target-flops 0.5
  strip -o gpu-carry/trainspeed "$bench"
  strip -o gpu-carry/onnx-prune "$CARGO_TARGET_DIR"/release/onnx-prune
  xz -T2 -3 gpu-carry/trainspeed gpu-carry/onnx-prune
  gzip -c ../shared/data/cifar10/train_50k_jpeg.tar >gpu-carry/data/train_50k_jpeg.tar.gz
  gzip -c ../shared/data/cifar10/test_10k_jpeg.tar >gpu-carry/data/test_10k_jpeg.tar.gz
  cp tools/bench_train_torch.py gpu-carry/
  # The Vulkan loader and the GL vendor-neutral dispatch libraries: the machine has NVIDIA's
  # driver and ICD, whose library needs libglvnd; with libvulkan alone no adapter answers (seen
  # on an H200 machine: burn fell back to flex).
  mkdir -p /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update -q >/dev/null && (cd gpu-carry/gl && apt-get $o download libvulkan1 libegl1 \
    libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1)
  python3 -m pip download -q --no-deps --only-binary=:all: -d gpu-carry/whl onnx2torch==1.5.15
  cat >gpu-carry/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the device machine. Every step has its own time cap, so one failure leaves the rest.
set -uo pipefail
cd "$(dirname "$0")"
limit="${1:-3m}"  # the main job's --time-limit (minutes "Nm" or seconds "Ns")
out="${OUT:-/tmp/out}"; mkdir -p "$out"
t0=$(date +%s); el() { echo "[+$(( $(date +%s) - t0 ))s] $*"; }
for f in gl/*.deb; do dpkg -x "$f" /; done; ldconfig
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null || true
if ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null && ! compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null &&
  [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"
fi
xz -d -T0 trainspeed.xz onnx-prune.xz && chmod +x trainspeed onnx-prune
mkdir -p /tmp/data && (cd /tmp/data && for f in "$OLDPWD"/data/*.gz; do gunzip -c "$f" >"$(basename "${f%.gz}")"; done)
python3 -m pip install -q --no-index --no-deps --target /tmp/site whl/*.whl && export PYTHONPATH=/tmp/site
el "mobilenet_v2 from torchvision (random weights, BN folded by the exporter)"
timeout 60 python3 - <<'PY' || echo "mobilenet_v2 export failed"
import torch, torchvision
m = torchvision.models.mobilenet_v2().eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), "shared/models/mobilenet_v2.onnx", opset_version=17,
                  input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                  dynamo=False)
PY
mkdir -p shared/models/zoo shared/data/cifar10
[ -f shared/models/mobilenet_v2.onnx ] && mv shared/models/mobilenet_v2.onnx shared/models/zoo/
export ONNX_PRUNE_SHARED="$PWD/shared"
el "burn-wgpu training step (trainspeed --device wgpu --no-torch)"
timeout 130 ./trainspeed --no-torch --device wgpu --steps 10 2>&1 | tee "$out/trainspeed_wgpu.md"
m=shared/models/cifar10
el "the main job on resnet56, fine-tuning on the GPU, --time-limit $limit"
norm=(--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
secs=$(( $(echo "$limit" | sed 's/m$/*60/;s/s$//') + 45 ))
timeout "$secs" ./onnx-prune $m/resnet56.onnx -o /tmp/r56_p50.onnx --target-flops 0.5 \
  --data /tmp/data/train_50k_jpeg.tar "${norm[@]}" --time-limit "$limit" --report "$out/job.json" 2>&1 |
  tr '\r' '\n' | grep -v '^\s*$' | awk 'length < 400' | tee "$out/job.log" | grep -v '%|' | tail -60
el "test top-1 (test_10k_jpeg.tar)"
timeout 45 ./onnx-prune eval /tmp/r56_p50.onnx --data /tmp/data/test_10k_jpeg.tar "${norm[@]}" \
  --reference $m/resnet56.onnx 2>&1 | tee "$out/eval.txt"
el "PyTorch CUDA on the same graphs"
timeout 80 python3 bench_train_torch.py --device cuda --threads 16 --batch 64 --steps 10 \
  $m/resnet20.onnx $m/resnet56.onnx $m/resnet56_p50.onnx 2>&1 | tee "$out/torch_cuda.txt"
el "done"
RUN
  chmod +x gpu-carry/run.sh
  du -sh gpu-carry
  echo "carry: [\"gpu-carry\"], command: bash gpu-carry/run.sh 3m (about 9 minutes in all)"
  ;;
*)
  echo "usage: $0 stage" >&2
  exit 2
  ;;
esac
