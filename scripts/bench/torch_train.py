"""PyTorch side of the end-to-end benchmark: the loop LightlyTrain's distillation would run on the
same images, with the same method and shapes as `lt-train --batch-size B` on the same cache:
a torch DataLoader (WORKERS worker processes, PIL + torchvision transforms and mixup as in
torch_data.py) feeding torchvision resnet18 + Linear head (trunc-normal std 0.02) + L2 norm, the
teacher-embedding queue and KLDivLoss(batchmean) at tau 0.07, gradient clipping at 1.0 and the LARS
step (torch_method.py). The teacher embeddings are random unit vectors of the cache's
dimension (reading them is negligible next to a step). Per step, the time from the end of the
previous step (so waiting for data counts, as in lt-train's img_per_s).

    torch_train.py LIST BATCH STEPS THREADS WORKERS DIM QUEUE
Prints {"batch": B, "times": [seconds of steps 2..STEPS]} (the first step is warm-up).
"""
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import torch_method  # noqa: E402
from torch_data import MixedViews  # noqa: E402


def main():
    paths = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    B, steps, T, W, D, Q = (int(a) for a in sys.argv[2:8])
    torch.set_num_threads(T)
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    C = model.fc.in_features
    model.fc = torch.nn.Identity()
    head = torch.nn.Linear(C, D)
    torch.nn.init.trunc_normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    model.train()
    params = list(model.parameters()) + list(head.parameters())
    wds = [1e-6 if p.dim() > 1 else 0.0 for p in params]
    bufs = [None] * len(params)
    lr = 1.8 * math.sqrt(B / 1536)
    queue = torch.zeros(Q, D)
    ds = MixedViews(paths, B * steps)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, drop_last=True,
                                     num_workers=W, prefetch_factor=2)
    times = []
    t0 = time.perf_counter()
    for k, x in enumerate(dl):
        t = F.normalize(torch.randn(B, D), dim=-1)
        queue = torch_method.step(model, head, params, bufs, wds, x, t, queue, lr)
        t1 = time.perf_counter()
        if k > 0:
            times.append(t1 - t0)
        t0 = t1
    print(json.dumps({"batch": B, "times": times}))


if __name__ == "__main__":
    main()
