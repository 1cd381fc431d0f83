#!/usr/bin/env bash
# Your own model on the GPU (see gpu-check.sh for the set-up, plus .device/bin/custom_loop from
# `build-cuda.sh . --features cuda --bin probescope --example custom_loop`): the library example
# and every example model file, briefly.
set -u
out="${1:-${OUT:-./gpu-check-out}}"
mkdir -p "$out"
LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(":".join(os.path.join(p, d, "lib") for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
t0=$SECONDS
timeout 60 .device/bin/custom_loop "$out/custom_loop.jsonl" >"$out/own-model.log" 2>&1
echo "custom_loop: exit $? after $((SECONDS - t0)) s" | tee -a "$out/own-model.log"
head -c 600 "$out/custom_loop.jsonl" | grep -o '"device":"[^"]*"' | tee -a "$out/own-model.log"
for f in examples/models/*.toml; do
    t0=$SECONDS
    # Only the MNIST files travel: the Fashion-MNIST model runs on MNIST here.
    sed 's/kind = "fashion-mnist"/kind = "mnist"/' "$f" >"/tmp/$(basename "$f")"
    timeout 90 .device/bin/probescope run "/tmp/$(basename "$f")" --headless --device cuda --data-dir .device/data \
        --set steps=200 --set probe_train=5000 --set probe_val=2000 --set probe_test=2000 \
        >>"$out/own-model.log" 2>&1
    echo "$f: exit $? after $((SECONDS - t0)) s" | tee -a "$out/own-model.log"
done
