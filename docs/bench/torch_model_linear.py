# Run: python3 docs/bench/torch_model_linear.py 1 8 112 360   (records: docs/bench/h200-model/peer-linear.txt)
# The peer of the model's linear layers on the same GPU: PyTorch f32 matmuls (cuBLAS, TF32 off)
# doing a step's linear layers of `generate`'s v32 model (layers 0..2: dense 0, MoE 1 with 32
# experts, 8 active + 1 shared; head of 32,768) for a batch of B tokens, the MoE's tokens
# grouped by expert (index_select, matmul, index_add). CUDA events, median of 5 after 2 warm-ups.
import sys, torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"
H, QL, HEADS, QS, MS, IH, ID, V, KV = 7168, 1536, 128, 192, 576, 64, 128, 128, 512
INTER, MOE, E, TOPK, VOCAB = 18432, 2048, 32, 8, 32768
g = torch.Generator(device=dev).manual_seed(0)
def w(n, k): return torch.randn(n, k, device=dev, generator=g) * 0.01
attn = [w(QL, H), w(HEADS * QS, QL), w(MS, H), w(IH * ID, QL), w(ID, H), w(IH, H), w(H, HEADS * V)]
attn_in = [H, QL, H, QL, H, H, HEADS * V]
dense = [w(INTER, H), w(INTER, H), w(H, INTER)]
shared = [w(MOE, H), w(MOE, H), w(H, MOE)]
gate = w(E, H)
experts = [(w(MOE, H), w(MOE, H), w(H, MOE)) for _ in range(E)]
head = w(VOCAB, H)
def mlp(x, ws):
    g_, u_, d_ = ws
    return torch.nn.functional.silu(x @ g_.T) * (x @ u_.T) @ d_.T
def step(B):
    x = torch.randn(B, H, device=dev, generator=g)
    for layer in range(2):
        for wt, k in zip(attn, attn_in):
            xi = x if k == H else torch.randn(B, k, device=dev)
            _ = xi @ wt.T
        if layer == 0:
            y = mlp(x, dense)
        else:
            logits = x @ gate.T
            idx = torch.topk(logits, TOPK, dim=-1).indices
            y = mlp(x, shared)
            for e in range(E):
                rows = (idx == e).any(dim=-1).nonzero().flatten()
                if rows.numel():
                    y.index_add_(0, rows, mlp(x.index_select(0, rows), experts[e]))
        x = x + y * 1e-3
    return x @ head.T
for B in [int(b) for b in sys.argv[1:]]:
    for _ in range(2): step(B)
    times = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); step(B); e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    print(f"peer torch f32 linear layers, batch {B}: {times[2]:.3f} ms a step (median of 5)")
