#!/usr/bin/env bash
# The GPU checks of probescope in one go, for a machine with an NVIDIA GPU and PyTorch (the
# baseline) but no Rust toolchain. Build on a machine with cargo first:
#
#   ../shared/cuda/build-cuda.sh . --features cuda --bin probescope --test gpu   (or cargo build
#   --release --features cuda --bin probescope --test gpu where the CUDA toolkit is installed)
#
# and put the binary, the GPU test binary and the MNIST files where this script looks:
#
#   .device/bin/probescope  .device/bin/gpu-tests  .device/data/mnist/*.gz
#
# usage: bash scripts/gpu-check.sh [OUTDIR]   (OUTDIR defaults to ./gpu-check-out)
set -u
out="${1:-${OUT:-./gpu-check-out}}"
mkdir -p "$out"
bin=.device/bin
data=.device/data
# The CUDA 13 libraries that come with PyTorch's wheels (libcublas, libcurand, libnvrtc...).
LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(":".join(os.path.join(p, d, "lib") for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$out/gpu.txt"
step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name"
    local t0=$SECONDS
    timeout "$limit" "$@" > >(tee "$out/$name.log") 2>&1
    echo "=== $name: exit $? after $((SECONDS - t0)) s"
}
step gpu-tests 120 "$bin/gpu-tests" --test-threads=1
# Training with online probes: the fused kernels and candle's operations against no probes.
step bench-gpu 120 "$bin/probescope" bench train --data-dir "$data" --device cuda \
    --steps 781 --rounds 3 --online-ops-too --probe-samples 10000 --bf16 --skip-rmsprop
step torch 120 python3 benches/torch_baseline.py "$data" --steps 781 --rounds 3 \
    --probe-samples 10000
step run-gpu 60 "$bin/probescope" run mnist-convnet --headless --device cuda \
    --data-dir "$data" --set epochs=1 --set probe_train=10000 --record "$out/run.jsonl" --force
step bench-gpu-50k 110 "$bin/probescope" bench train --data-dir "$data" --device cuda \
    --steps 100 --rounds 1 --probe-samples 50000 --rank-off-too --skip-rmsprop
