"""One step of lt-train's method in PyTorch, shared by the benchmarks' PyTorch sides
(torch_student.py, torch_train.py): push the batch's teacher embeddings onto the queue, student
features -> Linear head -> L2 norm, KL(teacher || student) over the queue at temperature tau
(batch mean), gradient-norm clipping, and the LARS step of tests/reference/optim_ref.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import optim_ref  # noqa: E402


def step(model, head, params, bufs, wds, x, t, queue, lr, tau=0.07, clip=1.0):
    """One optimizer step on images x (B,3,S,S) with teacher embeddings t (B,D); queue (Q,D).
    Updates params in place (LARS momentum in bufs) and returns the new queue."""
    queue = torch.cat([t, queue])[: queue.shape[0]]
    s = F.normalize(head(model(x)), dim=-1)
    loss = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s @ queue.T / tau, -1),
                                                     F.softmax(t @ queue.T / tau, -1))
    for p in params:
        p.grad = None
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    optim_ref.lars_step([p.data for p in params], [p.grad for p in params], bufs, lr, wds)
    return queue
