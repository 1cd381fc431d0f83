#!/usr/bin/env bash
# Every preset, briefly, on the GPU (see gpu-check.sh for the set-up), and bifurcation on the
# CPU and the GPU with the same seed, for a side-by-side look at the two summaries.
set -u
out="${1:-${OUT:-./gpu-check-out}}"
mkdir -p "$out"
bin=.device/bin/probescope
data=.device/data
LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(":".join(os.path.join(p, d, "lib") for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))))'):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
while read -r dev args; do
    t0=$SECONDS
    timeout 90 "$bin" run $args --headless --device "$dev" --data-dir "$data" >>"$out/presets.log" 2>&1
    echo "$dev $args: exit $? after $((SECONDS - t0)) s" | tee -a "$out/presets.log"
done <<'LIST'
cuda untrained-mlp --set datasets=3 --set depth=8
cuda bifurcation --set steps=300
cpu bifurcation --set steps=300
cuda feature-subset --set train=2000 --set test=2000
cuda deep-mlp --set steps=300 --set snapshots=0,300 --set depth=32
cuda deep-mlp --set variant=aux --set steps=300 --set snapshots=0,300 --set depth=32
cuda deep-mlp --set variant=skip --set steps=300 --set snapshots=0,300 --set depth=32
cuda mnist-convnet --set epochs=1 --set selectivity=on --set transfer=on --set probe_dtype=bf16
LIST
