"""PyTorch side of the student-step benchmark: torchvision resnet18 + Linear head + L2 norm +
the queue KL loss + clipping + LARS (torch_method.py), on random input.
One warm-up step, then timed steps. Default NCHW memory format: on the 2-core bench machine
PyTorch 1.13's step is about 10% slower with channels_last.

    torch_student.py ARCH BATCH SIZE REPEATS THREADS
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import torch_method  # noqa: E402


def main():
    arch, B, S, R, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(T)
    D, Q = 768, 8192
    model = getattr(torchvision.models, arch)()
    C = model.fc.in_features
    model.fc = torch.nn.Identity()
    head = torch.nn.Linear(C, D)
    model.train()
    x = torch.randn(B, 3, S, S)
    t = F.normalize(torch.randn(B, D), dim=-1)
    queue = F.normalize(torch.randn(Q, D), dim=-1)
    params = list(model.parameters()) + list(head.parameters())
    wds = [1e-6 if p.dim() > 1 else 0.0 for p in params]
    bufs = [None] * len(params)
    times = []
    for it in range(R + 1):
        t0 = time.perf_counter()
        queue = torch_method.step(model, head, params, bufs, wds, x, t, queue, 0.1)
        if it > 0:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"batch": B, "times": times}))


if __name__ == "__main__":
    main()
