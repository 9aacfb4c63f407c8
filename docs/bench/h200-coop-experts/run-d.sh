#!/usr/bin/env bash
# session 2026-12-01 run D: bench model at v32-layers' shapes (256 experts of 2048, 8 a token,
# FP8 weights in pieces of a binding): the grouped experts on the tensor cores, then the same
# binary with ESS_MATRIX=fma (the FMA kernels), batches 8, 64 and 512
for f in .gl/*.deb; do dpkg -x $f / ; done >/dev/null 2>&1; ldconfig
export WGPU_BACKEND=vulkan
mkdir -p $OUT/r
for m in auto fma; do
  ( ESS_MATRIX=$m timeout -s KILL 170 .dev/ess-wgpu bench model --builtin v32-layers --batch 8,64,512 --reps 3 ) > $OUT/r/bench-model-$m.txt 2>&1
  echo "rc=$?" >> $OUT/r/bench-model-$m.txt
  grep -E "experts fp8|^matrix|rc=" $OUT/r/bench-model-$m.txt
done
