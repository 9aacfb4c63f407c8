#!/usr/bin/env bash
# session 2026-12-01 run A: the routed experts on the tensor cores (expert_coop): the kernel and
# model suites, then the real 256-expert layer at 32K, batch 8, both modes (run R's command)
for f in .gl/*.deb; do dpkg -x $f / ; done >/dev/null 2>&1; ldconfig
export WGPU_BACKEND=vulkan
mkdir -p $OUT/r
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/r/gpu.txt
for tl in kernels:150 model:150 engine:100; do
  t=${tl%:*}; l=${tl#*:}
  ( timeout -s KILL $l .dev/test-$t --nocapture ) > $OUT/r/$t.txt 2>&1; echo "rc=$?" >> $OUT/r/$t.txt
  grep -E "^test result|experts|FAILED|panicked" $OUT/r/$t.txt | head -20
done
( timeout -s KILL 240 .dev/ess-wgpu generate --builtin v32-layers --builtin-dtype fp8 --layers 3..4 --context 32768 --batch 8 --mode both --device-budget 40G --new-tokens 17 --time-every 8 ) > $OUT/r/moe256-32k-b8.txt 2>&1; echo "rc=$?" >> $OUT/r/moe256-32k-b8.txt
grep -E "^(resident|offload) |verdict|rc=" $OUT/r/moe256-32k-b8.txt
