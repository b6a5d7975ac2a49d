"""The distillation method after the head (lib/train/method) against PyTorch: L2 normalisation and its
backward (F.normalize + autograd), the queue (LightlyTrain's push-to-front, B >= Q rule), the KL
loss and dL/ds (KLDivLoss(reduction="batchmean") + autograd, in float64), the queue auto size."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run, tool

TAU = 0.07


def queue_push_ref(queue, x):
    """LightlyTrain's Distillation._update_queue, written out."""
    B, Q = x.shape[0], queue.shape[0]
    if B >= Q:
        return x[:Q].clone()
    out = queue.clone()
    out[B:] = queue[:-B].clone()
    out[:B] = x
    return out


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_loss(tmp, B, Q, D, steps, rng):
    raw = rng.standard_normal((steps, 2, B, D)).astype(np.float32)
    raw[:, 0] *= rng.uniform(0.5, 3.0)  # head outputs / teacher features of arbitrary scale
    inp, out = tmp / "in.bin", tmp / "out.bin"
    raw.tofile(inp)
    run([tool("method_tool"), "loss", B, Q, D, repr(TAU), steps, inp, out])
    buf = out.read_bytes()
    per = 8 + 4 * (4 * B * D + Q * D)
    assert len(buf) == steps * per
    res = []
    for k in range(steps):
        c = buf[k * per:(k + 1) * per]
        loss = np.frombuffer(c[:8], np.float64)[0]
        f = np.frombuffer(c[8:], np.float32)
        o = 0
        parts = {}
        for name, n in [("t", B * D), ("s", B * D), ("queue", Q * D), ("ds", B * D), ("dx", B * D)]:
            parts[name] = f[o:o + n].reshape(-1, D)
            o += n
        parts["loss"] = loss
        res.append(parts)
    return raw, res


# (B, Q, D, steps): B < Q (several pushes, queue partly zero then wrapping), B == Q, B > Q.
CASES = [(5, 16, 12, 5), (7, 20, 33, 4), (8, 8, 16, 3), (13, 6, 10, 3), (3, 50, 768, 2),
         (1, 3, 5, 4), (300, 40, 16, 2)]


@pytest.mark.parametrize("B,Q,D,steps", CASES)
def test_loss_and_grad_vs_torch(tmp, B, Q, D, steps):
    rng = np.random.default_rng()
    raw, res = run_loss(tmp, B, Q, D, steps, rng)
    queue = torch.zeros(Q, D, dtype=torch.float64)
    for k in range(steps):
        traw = torch.tensor(raw[k, 0], dtype=torch.float64)
        sraw = torch.tensor(raw[k, 1], dtype=torch.float64, requires_grad=True)
        t = F.normalize(traw, dim=-1, p=2)
        s = F.normalize(sraw, dim=-1, p=2)
        s.retain_grad()
        queue = queue_push_ref(queue, t.detach())
        logits_t = t @ queue.T / TAU
        logits_s = s @ queue.T / TAU
        loss = torch.nn.KLDivLoss(reduction="batchmean")(
            F.log_softmax(logits_s, dim=-1), F.softmax(logits_t, dim=-1))
        loss.backward()
        r = res[k]
        assert rel(r["t"], t.detach()) < 1e-6
        assert rel(r["s"], s.detach()) < 1e-6
        # The queue holds our float32 t; compare with the reference built from float64 t.
        assert rel(r["queue"], queue) < 1e-6
        lv = loss.item()
        assert abs(r["loss"] - lv) <= 1e-4 * abs(lv) + 1e-7, (k, r["loss"], lv)
        assert rel(r["ds"], s.grad) < 1e-4, (k, rel(r["ds"], s.grad))
        assert rel(r["dx"], sraw.grad) < 1e-4, (k, rel(r["dx"], sraw.grad))
        # The documented closed form, dL/ds = (softmax_s − softmax_t)·Q/(τB).
        closed = (F.softmax(logits_s, -1) - F.softmax(logits_t, -1)).detach() @ queue / (TAU * B)
        assert rel(s.grad, closed) < 1e-10


def test_queue_contents_after_pushes(tmp):
    """The queue after each push against a plain torch implementation, exactly (float32 copies)."""
    rng = np.random.default_rng()
    for B, Q in [(3, 10), (4, 4), (9, 4), (1, 2)]:
        D, steps = 6, 6
        raw, res = run_loss(tmp, B, Q, D, steps, rng)
        queue = torch.zeros(Q, D)
        for k in range(steps):
            t = torch.tensor(res[k]["t"])  # our normalised float32 batch
            queue = queue_push_ref(queue, t)
            np.testing.assert_array_equal(res[k]["queue"], queue.numpy())
        if B < Q:
            # Newest first, and entries not yet filled are still zero after the first push.
            np.testing.assert_array_equal(res[-1]["queue"][:B], res[-1]["t"])


def test_zero_queue_gives_zero_loss_and_grad(tmp):
    rng = np.random.default_rng()
    B, Q, D = 6, 11, 9
    x = rng.standard_normal((2, B, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    x.tofile(tmp / "z.bin")
    r = run([tool("method_tool"), "zeroloss", B, Q, D, repr(TAU), tmp / "z.bin"])
    loss, gmax = map(float, r.stdout.split())
    assert loss == 0.0 and gmax == 0.0


def test_extreme_logits_stay_finite(tmp):
    """τ small enough that exp() of the raw logits would overflow float32: log-sum-exp keeps the
    loss finite and equal to torch's."""
    rng = np.random.default_rng()
    B, Q, D, tau = 4, 9, 8, 1e-3
    raw = rng.standard_normal((1, 2, B, D)).astype(np.float32)
    raw.tofile(tmp / "in.bin")
    run([tool("method_tool"), "loss", B, Q, D, repr(tau), 1, tmp / "in.bin", tmp / "out.bin"])
    loss = np.frombuffer((tmp / "out.bin").read_bytes()[:8], np.float64)[0]
    t = F.normalize(torch.tensor(raw[0, 0], dtype=torch.float64), dim=-1)
    s = F.normalize(torch.tensor(raw[0, 1], dtype=torch.float64), dim=-1)
    q = queue_push_ref(torch.zeros(Q, D, dtype=torch.float64), t)
    ref = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s @ q.T / tau, -1), F.softmax(t @ q.T / tau, -1)).item()
    assert np.isfinite(loss)
    assert abs(loss - ref) <= 1e-3 * abs(ref) + 1e-6


def test_l2norm_forward_backward_vs_torch(tmp):
    """Including a zero row and a row below the 1e-12 clamp (the clamp path: dx = dy/eps)."""
    rng = np.random.default_rng()
    B, D = 6, 17
    x = rng.standard_normal((B, D)).astype(np.float32) * rng.uniform(0.1, 10)
    x[2] = 0.0
    x[4] = rng.standard_normal(D).astype(np.float32) * 1e-14
    dy = rng.standard_normal((B, D)).astype(np.float32)
    np.concatenate([x, dy]).tofile(tmp / "in.bin")
    run([tool("method_tool"), "l2", B, D, tmp / "in.bin", tmp / "out.bin"])
    out = np.fromfile(tmp / "out.bin", np.float32).reshape(2, B, D)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = F.normalize(xt, dim=-1, p=2, eps=1e-12)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    for b in range(B):
        assert rel(out[0][b], y[b].detach()) < 1e-6 or np.all(out[0][b] == 0)
        assert rel(out[1][b], xt.grad[b]) < 1e-5, (b, out[1][b], xt.grad[b])


AUTO = [(1, 16), (49, 16), (50, 32), (99, 32), (100, 64), (249, 64), (250, 128), (499, 128),
        (500, 256), (999, 256), (1000, 512), (1999, 512), (2000, 1024), (3999, 1024),
        (4000, 2048), (9999, 2048), (10000, 4096), (19999, 4096), (20000, 8192),
        (10_000_000, 8192)]


def test_queue_size_auto_boundaries():
    r = run([tool("method_tool"), "autoq"] + [n for n, _ in AUTO])
    got = [int(v) for v in r.stdout.split()]
    assert got == [q for _, q in AUTO]


@pytest.mark.parametrize("Q,N,ok", [(16, 17, True), (16, 16, False), (17, 16, False),
                                    (0, 100, False), (8191, 8192, True)])
def test_explicit_queue_size_must_be_below_dataset_size(Q, N, ok):
    r = run([tool("method_tool"), "checkq", Q, N], check=False)
    assert (r.returncode == 0) == ok
    if not ok:
        assert "method_tool: error:" in r.stderr
        if Q > 0:
            assert f"--queue-size {Q} must be smaller than the number of images ({N})" in r.stderr
