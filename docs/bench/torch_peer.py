#!/usr/bin/env python3
"""The PyTorch eager peer of ess-wgpu's kernels, timed on the same GPU in the same run.

    python3 docs/bench/torch_peer.py [--json out.json]

Times (CUDA events, median of 20 after 3 warm-ups, device time only):
  - GEMM C = A · Wᵀ (W a weight [out, in], as example 05_gemm lays it out), f16 (tensor cores)
    and f32 (TF32 off: the FMA units), at 4096³, 8192³ and the decoder layer's decode shapes
    (M = 1, 16, 64, 256 rows against q down 7168 → 1536, q up 1536 → 24576, kv down 7168 → 576,
    o 16384 → 7168, an expert 7168 → 2048);
  - the lightning indexer at v32 (64 heads × 128, batch 64, 32K and 128K keys), f16 operands:
    Σ_h w[h] · relu(q[h] · k) as bmm + relu + a weighted bmm, with the head scores in f32 (as
    DeepSeek's model.py sums them) and all in f16 (the fastest eager form);
  - sparse MLA at v32 (128 heads, latent 512 + rope 64, k = 2048, batch 1, 16, 64), f16: gather
    the selected rows, scores, softmax in f32, P · V;
  - torch.topk(2048) over f32 scores of 64 rows × 32K and × 128K.
Each line: what, shape, microseconds, TFLOP/s or GB/s.
"""
import argparse
import json

import torch


def timed(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)  # µs
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    rows = []

    def report(what, shape, us, flops=None, nbytes=None):
        r = {"what": what, "shape": shape, "us": us}
        extra = ""
        if flops:
            r["tflops"] = flops / us / 1e6
            extra += f" {r['tflops']:7.1f} TFLOP/s"
        if nbytes:
            r["gbps"] = nbytes / us / 1e3
            extra += f" {r['gbps']:7.0f} GB/s"
        rows.append(r)
        print(f"{what:<14} {shape:<28} {us:10.1f} us{extra}", flush=True)

    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    # GEMM
    shapes = [(4096, 4096, 4096), (8192, 8192, 8192)]
    for m in (1, 16, 64, 256):
        for n, k in ((1536, 7168), (24576, 1536), (576, 7168), (7168, 16384), (2048, 7168)):
            shapes.append((m, n, k))
    for dtype, name in ((torch.float16, "gemm f16"), (torch.float32, "gemm f32")):
        for m, n, k in shapes:
            if dtype == torch.float32 and m == 8192:
                continue  # 8192³ in f32 adds nothing over 4096³
            a = torch.randn(m, k, device=dev, dtype=dtype)
            w = torch.randn(n, k, device=dev, dtype=dtype)
            us = timed(lambda: a @ w.t())
            size = a.element_size()
            nbytes = (m * k + n * k + m * n) * size
            report(name, f"M {m} N {n} K {k}", us, 2 * m * n * k, nbytes)
            del a, w
    # indexer at v32
    h, d = 64, 128
    for n in (32768, 131072):
        bsz = 64
        q = torch.randn(bsz, h, d, device=dev, dtype=torch.float16)
        k = torch.randn(bsz, n, d, device=dev, dtype=torch.float16)
        w = torch.randn(bsz, 1, h, device=dev, dtype=torch.float16)

        def indexer_f32():  # the scores in f32, as model.py sums them
            s = torch.bmm(q, k.transpose(1, 2)).float().relu_()
            return torch.bmm(w.float(), s)

        def indexer_f16():  # all in f16: the fastest eager form
            return torch.bmm(w, torch.bmm(q, k.transpose(1, 2)).relu_())

        flops, nbytes = 2 * bsz * h * d * n, bsz * n * d * 2
        report("indexer f32", f"B {bsz} L {n}", timed(indexer_f32), flops, nbytes)
        report("indexer f16", f"B {bsz} L {n}", timed(indexer_f16), flops, nbytes)
        del q, k
    # sparse MLA at v32: heads 128, latent 512 + rope 64, k 2048, from a 32K cache a sequence
    heads, lat, rope, topk, ctx = 128, 512, 64, 2048, 32768
    for bsz in (1, 16, 64):
        cache = torch.randn(bsz, ctx, lat + rope, device=dev, dtype=torch.float16)
        q = torch.randn(bsz, heads, lat + rope, device=dev, dtype=torch.float16)
        idx = torch.randint(0, ctx, (bsz, topk), device=dev)
        scale = (128 + 64) ** -0.5

        def mla():
            kv = torch.gather(cache, 1, idx[:, :, None].expand(-1, -1, lat + rope))
            s = torch.bmm(q, kv.transpose(1, 2)).float() * scale
            p = s.softmax(-1).half()
            return torch.bmm(p, kv[:, :, :lat])

        us = timed(mla)
        flops = 2 * bsz * heads * topk * (lat + rope + lat)
        report("sparse mla f16", f"B {bsz} k {topk}", us, flops, bsz * topk * (lat + rope) * 2)
        del cache
    # top-k
    for n in (32768, 131072):
        s = torch.randn(64, n, device=dev, dtype=torch.float32)
        us = timed(lambda: torch.topk(s, 2048, dim=-1))
        report("topk", f"B 64 L {n} k 2048", us, None, 64 * n * 4)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
