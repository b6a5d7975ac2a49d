"""PyTorch side of the teacher benchmark: the same DINOv2 weights file, the same batch and size,
the same thread count; one warm-up, then timed forwards. Prints one JSON line like bench_teacher.

    torch_teacher.py WEIGHTS BATCH SIZE REPEATS THREADS
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import torch  # noqa: E402

import dinov2_ref  # noqa: E402
import st_io  # noqa: E402


def main():
    weights, B, S, R, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(T)
    sd, _ = st_io.load(weights)
    D = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    n_reg = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    m = dinov2_ref.DinoVisionTransformer(dim=D, depth=depth, patch=patch, pos_grid=grid, n_reg=n_reg)
    m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    m.eval()
    x = torch.randn(B, 3, S, S)
    times = []
    with torch.inference_mode():
        m(x)
        for _ in range(R):
            t0 = time.perf_counter()
            m(x)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"batch": B, "embed_dim": D, "times": times}))


if __name__ == "__main__":
    main()
