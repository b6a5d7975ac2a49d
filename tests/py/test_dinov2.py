"""The C DINOv2 forward (lib/models/dinov2.c via tests/tools/dinov2_tool) against the PyTorch
reference (tests/reference/dinov2_ref.py), on fresh random weights and inputs every run: several
sizes, registers, SwiGLU, patch 14 and 8, position-embedding resize (square, non-square, stored
grid smaller and larger than the input grid), both key namings (+ BlockChunk), F32/F16/BF16
weights, batch 1 and 3, and determinism per thread count."""
import os

import numpy as np
import pytest
import torch

from conftest import run, tool
import dinov2_ref
import st_io

torch.set_num_threads(1)
TOL = 1e-4

# name: model config, image H, W, batch, stored dtype
CASES = {
    "d64_p14_same_grid_f32": (dict(dim=64, depth=2, patch=14, pos_grid=4), 56, 56, 1,
                              torch.float32),
    "d64_p14_resize_nonsquare_f16": (dict(dim=64, depth=2, patch=14, pos_grid=4), 70, 42, 3,
                                     torch.float16),
    "d128_reg4_p8_bf16": (dict(dim=128, depth=3, patch=8, pos_grid=6, n_reg=4), 40, 48, 3,
                          torch.bfloat16),
    "d192_swiglu_p14_f32": (dict(dim=192, depth=2, patch=14, pos_grid=5, hidden=128, swiglu=True),
                            98, 70, 2, torch.float32),
    "d192_swiglu_upscale_bf16": (dict(dim=192, depth=1, patch=14, pos_grid=3, swiglu=True,
                                      hidden=256), 84, 112, 1, torch.bfloat16),
    # M² patches but a non-square image: DINOv2 still interpolates (scale (g + 0.1)/M)
    "d128_reg4_npatch_eq_N_nonsquare_f16": (dict(dim=128, depth=2, patch=8, pos_grid=4, n_reg=4),
                                            16, 64, 1, torch.float16),
    # square image with leftover pixels (ignored by the conv), grid == M: pos_embed unchanged
    "d64_p8_leftover_pixels_bf16": (dict(dim=64, depth=1, patch=8, pos_grid=4), 35, 35, 3,
                                    torch.bfloat16),
}


def fresh_seed():
    return int.from_bytes(os.urandom(4), "little")


def build(cfg, dtype, seed):
    """A randomised reference model whose parameters are exactly the values stored in `dtype`;
    returns (model, state dict in dtype)."""
    torch.manual_seed(seed)
    m = dinov2_ref.randomize(dinov2_ref.DinoVisionTransformer(**cfg)).eval()
    sd = {k: v.detach().to(dtype).contiguous() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for k, p in m.state_dict().items():
            p.copy_(sd[k].float())
    return m, sd


def run_tool(weights, x, tmp, threads=None, tag="out"):
    """x: (B, 3, H, W) torch float -> (stdout, (B, D) numpy)."""
    B, _, H, W = x.shape
    inp, out = tmp / f"{tag}_in.f32", tmp / f"{tag}.f32"
    x.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32).tofile(inp)
    args = [tool("dinov2_tool"), weights, inp, B, H, W, out]
    if threads:
        args += ["--threads", threads]
    r = run(args)
    return r.stdout, np.fromfile(out, dtype=np.float32).reshape(B, -1)


def errors(ours, ref):
    rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    return float(rel.max()), float(np.abs(ours - ref).max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_reference(case, tmp):
    cfg, H, W, B, dtype = CASES[case]
    seed = fresh_seed()
    model, sd = build(cfg, dtype, seed)
    x = torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ref = model(x).numpy()
    namings = {"original": sd, "hf": dinov2_ref.to_hf_names(sd)}
    if cfg["depth"] > 1:
        namings["chunked"] = dinov2_ref.to_chunked_names(sd, 2)
    for naming, tensors in namings.items():
        path = tmp / f"{naming}.safetensors"
        st_io.save(path, tensors)
        stdout, ours = run_tool(path, x, tmp, tag=naming)
        assert f"embed_dim={cfg['dim']} depth={cfg['depth']}" in stdout
        assert f"registers={cfg.get('n_reg', 0)}" in stdout
        assert f"pos_grid={cfg['pos_grid']}" in stdout
        assert ("mlp=swiglu" in stdout) == bool(cfg.get("swiglu"))
        assert ("names=hf" in stdout) == (naming == "hf")
        rel, mx = errors(ours, ref)
        print(f"{case} [{naming}] seed={seed}: max rel err {rel:.3g}, max abs err {mx:.3g}")
        assert rel < TOL and mx < TOL, f"{case} [{naming}] seed={seed}: rel {rel} abs {mx}"
        assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_pos_embed_resize_matters(tmp):
    """Guard against a vacuous test: the resized position embedding must change the output, so
    using the wrong interpolation (size= instead of scale_factor=) would be caught."""
    cfg, H, W, B, dtype = CASES["d64_p14_resize_nonsquare_f16"]
    model, sd = build(cfg, dtype, fresh_seed())
    x = torch.randn(B, 3, H, W)
    with torch.no_grad():
        ref = model(x).numpy()
        M, gh, gw, D = cfg["pos_grid"], H // 14, W // 14, cfg["dim"]
        pos = model.pos_embed
        by_size = torch.nn.functional.interpolate(
            pos[:, 1:].reshape(1, M, M, D).permute(0, 3, 1, 2), size=(gh, gw), mode="bicubic")
        model.interpolate_pos_encoding = lambda t, h, w: torch.cat(
            (pos[:, :1], by_size.permute(0, 2, 3, 1).reshape(1, -1, D)), dim=1)
        wrong = model(x).numpy()
    assert errors(wrong, ref)[0] > 100 * TOL


def test_threads_deterministic(tmp):
    cfg = dict(dim=128, depth=2, patch=8, pos_grid=4, n_reg=4)
    seed = fresh_seed()
    model, sd = build(cfg, torch.float32, seed)
    x = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ref = model(x).numpy()
    path = tmp / "w.safetensors"
    st_io.save(path, sd)
    outs = {}
    for threads in (1, 2):
        a = run_tool(path, x, tmp, threads=threads, tag=f"t{threads}a")[1]
        b = run_tool(path, x, tmp, threads=threads, tag=f"t{threads}b")[1]
        assert np.array_equal(a, b), f"--threads {threads}: two runs differ"
        rel, mx = errors(a, ref)
        print(f"threads={threads} seed={seed}: max rel err {rel:.3g}, max abs err {mx:.3g}")
        assert rel < TOL and mx < TOL
        outs[threads] = a
    assert errors(outs[1], outs[2])[0] < TOL
