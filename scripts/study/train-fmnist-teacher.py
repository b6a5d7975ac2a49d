#!/usr/bin/env python3
"""Trains a small DINOv2-shaped teacher on Fashion-MNIST's labels and writes it for lt-embed.

The views study (scripts/study/views.sh) needs a teacher whose embeddings carry meaning, and no
weights can be downloaded, so it makes one: a ViT with DINOv2's layout (tests/reference/
dinov2_ref.py, the model lt's C forward is tested against) trained with a cosine classifier on
its L2-normalised CLS embedding, on 56×56 views of the training set outside the first --skip
images (which the study distils on), with random resized crops and flips. The classifier head is
dropped; the .safetensors holds DINOv2's original key names, as lt-embed --teacher expects.

    scripts/study/train-fmnist-teacher.py OUT.safetensors [--images 40000] [--epochs 4]
        [--dim 128] [--depth 4] [--size 56] [--skip 5000] [--seed 0] [--threads 2]

It prints the test-set accuracy of the classifier it trained (a sanity check of the teacher).
"""
import argparse
import gzip
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import dinov2_ref  # noqa: E402
import st_io  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def views(x, size, train, gen):
    """x: (B, 28, 28) uint8 -> (B, 3, size, size) normalised; random resized crop + flip when
    training, the whole image otherwise."""
    x = torch.from_numpy(np.array(x)).float().div(255).unsqueeze(1)
    B = x.shape[0]
    if train:
        scale = torch.empty(B).uniform_(0.5, 1.0, generator=gen)
        ratio = torch.exp(torch.empty(B).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen))
        w = torch.sqrt(scale * ratio).clamp(max=1.0)
        h = torch.sqrt(scale / ratio).clamp(max=1.0)
        cx = (torch.rand(B, generator=gen) * (1 - w) + w / 2) * 2 - 1
        cy = (torch.rand(B, generator=gen) * (1 - h) + h / 2) * 2 - 1
        flip = torch.where(torch.rand(B, generator=gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, (B, 1, size, size), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return (x.expand(-1, 3, -1, -1) - MEAN) / STD


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--skip", type=int, default=5000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    tr_x = read_idx(os.path.join(a.src, "train-images-idx3-ubyte.gz"))
    tr_y = read_idx(os.path.join(a.src, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    te_x = read_idx(os.path.join(a.src, "t10k-images-idx3-ubyte.gz"))
    te_y = read_idx(os.path.join(a.src, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    tr_x, tr_y = tr_x[a.skip:a.skip + a.images], tr_y[a.skip:a.skip + a.images]

    grid = a.size // 14
    model = dinov2_ref.DinoVisionTransformer(dim=a.dim, depth=a.depth, patch=14, pos_grid=grid)
    with torch.no_grad():  # DINOv2 starts LayerScale at 1e-5; a short run trains better at 0.1
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(0.1)
            elif name in ("cls_token", "pos_embed"):
                p.normal_(0, 0.02)
    head = torch.nn.Linear(a.dim, 10)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05)
    B = 128
    steps = a.epochs * (len(tr_y) // B)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps,
                                                pct_start=0.1)
    t0, step = time.time(), 0
    for epoch in range(a.epochs):
        perm = torch.randperm(len(tr_y), generator=gen).numpy()
        model.train()
        for i in range(0, len(perm) - B + 1, B):
            idx = perm[i:i + B]
            logits = head(model(views(tr_x[idx], a.size, True, gen)) * 16)
            loss = F.cross_entropy(logits, torch.from_numpy(tr_y[idx]), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        print(f"train-fmnist-teacher: epoch {epoch + 1}/{a.epochs} loss {loss.item():.3f} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(te_y), 500):
            logits = head(model(views(te_x[i:i + 500], a.size, False, gen)))
            correct += int((logits.argmax(1).numpy() == te_y[i:i + 500]).sum())
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    tmp = a.out + ".tmp"
    st_io.save(tmp, sd, {"trained_on": "fashion-mnist labels", "images": str(len(tr_y)),
                         "epochs": str(a.epochs)})
    os.replace(tmp, a.out)
    print(f"train-fmnist-teacher: test accuracy {correct / len(te_y):.4f}; wrote {a.out} "
          f"({time.time() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
