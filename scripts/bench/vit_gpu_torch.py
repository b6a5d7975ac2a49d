#!/usr/bin/env python3
"""PyTorch's side of the GPU teacher benchmark (scripts/device-check.sh): the same DINOv2 ViT
(tests/reference/dinov2_ref.py, with its attention switched to F.scaled_dot_product_attention),
the same weights file, batch and resolution, on the machine's own torch and GPU.

    vit_gpu_torch.py WEIGHTS [--batch 256] [--size 224] [--iters 10] [--warmup 3]
        bf16 throughput: the model and a random input in bfloat16 on the GPU, eager mode,
        inference_mode; the median of per-forward times (wall clock after a device sync) after
        the warm-up.
        Prints "RESULT impl=torch ..." lines.
    vit_gpu_torch.py WEIGHTS --check IN.f32 OURS.f32 [--batch 4] [--size 224] [--label bf16]
        accuracy: IN.f32 (B, S, S, 3) float32 NHWC from `vit_bench check`, OURS.f32 its GPU
        embeddings (and OURS.f32.cpu the CPU ones, if present); compares them, and torch's own
        bf16 forward, against torch's fp32 forward on the GPU with TF32 off.
"""
import argparse
import os
import time
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "reference"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dinov2_ref  # noqa: E402
import st_io  # noqa: E402


DEV = "cuda"  # --device cpu: a slow functional check of this script on a machine without GPU


def sdpa_forward(self, x):
    """dinov2_ref.Attention.forward with PyTorch's fused attention (flash / memory-efficient)."""
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return self.proj(o.transpose(1, 2).reshape(B, N, C))


if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0 (the device machine has 2.11)
    dinov2_ref.Attention.forward = sdpa_forward
else:
    print("vit_gpu_torch: warning: this torch has no scaled_dot_product_attention: plain attention",
          file=sys.stderr)


def load_model(path):
    sd, _ = st_io.load(path)
    D = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    n_reg = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    m = dinov2_ref.DinoVisionTransformer(dim=D, depth=depth, patch=patch, pos_grid=grid,
                                         n_reg=n_reg, hidden=hidden)
    missing, unexpected = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if k != "mask_token"]
    if missing or unexpected:
        sys.exit(f"vit_gpu_torch: weights do not match the model: missing {missing[:5]}, "
                 f"unexpected {unexpected[:5]}")
    return m.eval(), dict(D=D, depth=depth, grid=grid, patch=patch, n_reg=n_reg, hidden=hidden)


def flops_per_view(c, S):
    G = (S // c["patch"]) ** 2
    T = 1 + c["n_reg"] + G
    D, Hd = c["D"], c["hidden"]
    block = 2 * T * D * (3 * D + D + 2 * Hd) + 4 * T * T * D
    return 2 * G * 3 * c["patch"] ** 2 * D + c["depth"] * block


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def bench(a):
    m, c = load_model(a.weights)
    m = m.to(device=DEV, dtype=torch.bfloat16)
    x = torch.randn(a.batch, 3, a.size, a.size, device=DEV, dtype=torch.bfloat16)
    times = []
    with torch.inference_mode():
        for _ in range(a.warmup):
            m(x)
        sync()
        for _ in range(a.iters):
            t0 = time.perf_counter()
            y = m(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    finite = bool(torch.isfinite(y).all())
    times.sort()
    med = times[len(times) // 2]
    gflop = flops_per_view(c, a.size) * 1e-9
    vps = a.batch * 1e3 / med
    print(f"RESULT impl=torch prec=bf16 batch={a.batch} size={a.size} D={c['D']} "
          f"depth={c['depth']} gflop_per_view={gflop:.2f} median_ms={med:.2f} "
          f"min_ms={times[0]:.2f} max_ms={times[-1]:.2f} views_per_s={vps:.0f} "
          f"tflops={vps * gflop * 1e-3:.1f} finite={int(finite)} torch={torch.__version__}",
          flush=True)


def diff(a, r):
    a, r = a.double(), r.double()
    nmse = float(((a - r) ** 2).sum() / (r ** 2).sum())
    cd = float((1 - F.cosine_similarity(a, r, dim=1)).max())
    return nmse, cd


def check(a):
    inp, ours = a.check
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m, c = load_model(a.weights)
    m = m.to(DEV)
    B, S, D = a.batch, a.size, c["D"]
    x = torch.from_numpy(np.fromfile(inp, dtype=np.float32).reshape(B, S, S, 3))
    x = x.permute(0, 3, 1, 2).contiguous().to(DEV)
    with torch.inference_mode():
        ref = m(x).float().cpu()
        tb = m.to(torch.bfloat16)(x.to(torch.bfloat16)).float().cpu()
    rows = [(f"ours_{a.label}", ours), ("ours_cpu_fp32", ours + ".cpu")]
    for name, path in rows:
        if os.path.exists(path):
            got = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(B, D))
            e, cd = diff(got, ref)
            print(f"RESULT check={name}_vs_torch_fp32 batch={B} size={S} nmse={e:.3e} "
                  f"max_cos_dist={cd:.3e}", flush=True)
    e, cd = diff(tb, ref)
    print(f"RESULT check=torch_bf16_vs_torch_fp32 batch={B} size={S} nmse={e:.3e} "
          f"max_cos_dist={cd:.3e}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--check", nargs=2, metavar=("IN.f32", "OURS.f32"))
    ap.add_argument("--label", default="bf16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a = ap.parse_args()
    global DEV
    DEV = a.device
    if DEV == "cuda" and not torch.cuda.is_available():
        sys.exit("vit_gpu_torch: torch sees no CUDA device")
    name = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}", flush=True)
    check(a) if a.check else bench(a)


if __name__ == "__main__":
    main()
