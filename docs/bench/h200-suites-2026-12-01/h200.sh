#!/usr/bin/env bash
# session 2026-12-01 run W: the kernel, model, engine, gemm, cache and architecture suites on the H200 after the -inf fix (neg_inf) in lib/mla.wgsl
for f in .gl/*.deb; do dpkg -x $f / ; done >/dev/null 2>&1; ldconfig
export WGPU_BACKEND=vulkan
R=$(pwd)
mkdir -p $OUT/r
cd $R
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/r/gpu.txt
for tl in kernels:150 model:150 engine:100 gemm:60 cache:50 architecture:40; do
  t=${tl%:*}; l=${tl#*:}
  ( timeout -s KILL $l .dev/test-$t ) > $OUT/r/$t.txt 2>&1; echo "rc=$?" >> $OUT/r/$t.txt
  tail -3 $OUT/r/$t.txt
done
cd $OUT && tar czf r.tgz r
