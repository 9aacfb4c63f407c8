#!/usr/bin/env bash
# session 2026-12-01 run C: the routed experts on the tensor cores (expert_coop): the real
# 256-expert layer's largest batch per mode at 128K (run V's commands), then 32K batch 8 in both modes (run R's)
for f in .gl/*.deb; do dpkg -x $f / ; done >/dev/null 2>&1; ldconfig
export WGPU_BACKEND=vulkan
mkdir -p $OUT/r
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/r/gpu.txt
G=".dev/ess-wgpu generate --builtin v32-layers --builtin-dtype fp8 --layers 3..4 --time-every 8"
run() { local name=$1; shift; date > $OUT/r/$name.txt; ( timeout -s KILL $@ ) >> $OUT/r/$name.txt 2>&1; echo "rc=$?" >> $OUT/r/$name.txt; date >> $OUT/r/$name.txt; grep -E "^(resident|offload) |verdict|rc=" $OUT/r/$name.txt; }
run moe256-128k-resident-largest 150 $G --sparse-memory-ratio 0.1 --context 131072 --largest-batch --mode resident --device-budget 32G --new-tokens 17 --no-verify
run moe256-128k-offload-largest 150 $G --sparse-memory-ratio 0.1 --context 131072 --largest-batch --mode offload --device-budget 32G --new-tokens 17 --no-verify
run moe256-32k-b8 220 $G --context 32768 --batch 8 --mode both --device-budget 40G --new-tokens 17
