"""PyTorch side of the student-step benchmark: torchvision resnet18 + Linear head + L2 norm +
the queue KL loss + clipping + the LARS step of tests/reference/optim_ref.py, on random input.
One warm-up step, then timed steps. Default NCHW memory format: on the 2-core bench machine
PyTorch 1.13's step is about 10% slower with channels_last.

    torch_student.py ARCH BATCH SIZE REPEATS THREADS
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import optim_ref  # noqa: E402


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
        queue = torch.cat([t, queue[:-B]])
        s = F.normalize(head(model(x)), dim=-1)
        loss = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s @ queue.T / 0.07, -1),
                                                         F.softmax(t @ queue.T / 0.07, -1))
        for p in params:
            p.grad = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim_ref.lars_step([p.data for p in params], [p.grad for p in params], bufs, 0.1, wds)
        if it > 0:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"batch": B, "times": times}))


if __name__ == "__main__":
    main()
