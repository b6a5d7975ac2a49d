"""lib/train/optim against PyTorch: AdamW and SGD against torch.optim over several steps, LARS against
tests/reference/optim_ref.py (lightly's LARS rule written from its definition) and its no-weight-
decay group against torch.optim.SGD, gradient clipping against torch.nn.utils.clip_grad_norm_, the
schedule against a transcription of docs/architecture.md §1, the default learning rates, and a state round
trip (what a checkpoint does) giving bit-identical results."""
import math

import numpy as np
import pytest
import torch

import optim_ref
from conftest import run, tool

# Tensors: (shape, weight-decay flag). A conv weight, a linear weight, biases / norm weights, a
# 1-element tensor.
SHAPES = [((6, 3, 3, 3), 1), ((6,), 0), ((5, 7), 1), ((5,), 0), ((1,), 0), ((4, 4), 1)]
STEPS = 5
T_SCHED, W_SCHED = 6, 2  # steps 0..4 cover warmup and the cosine part


def lrs(base):
    return [base * optim_ref.schedule(k, T_SCHED, W_SCHED) for k in range(STEPS)]


def rel(a, b, floor=0.0):
    """‖a − b‖ / max(‖b‖, floor). floor: the size of the terms that were summed into b, so that
    float32 cancellation (a buffer or weight that ends near zero) is judged against that size."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor, 1e-30))


def run_tool(tmp, kind, w0, grads, lr_list, *, maxnorm=1.0, mom=0.9, wd=0.0, tc=0.001, eps=1e-8,
             b1=0.9, b2=0.999, resume_at=0, flags=None, env=None, tag="o"):
    """Runs method_tool optim; returns (norms, weights per step, m, v) as flat float32 arrays."""
    sizes = [w.size for w in w0]
    flags = flags if flags is not None else [f for _, f in SHAPES]
    total = sum(sizes)
    data = [np.concatenate([w.ravel() for w in w0])]
    data += [np.concatenate([g.ravel() for g in gs]) for gs in grads]
    inp, out = tmp / f"{tag}.in", tmp / f"{tag}.out"
    np.concatenate(data).astype(np.float32).tofile(inp)
    spec = ",".join(f"{n}:{f}" for n, f in zip(sizes, flags))
    r = run([tool("method_tool"), "optim", kind, len(grads), repr(maxnorm), repr(mom), repr(wd),
             repr(tc), repr(eps), repr(b1), repr(b2), ",".join(repr(x) for x in lr_list),
             resume_at, spec, inp, out], env=env)
    assert int(r.stdout) == len(grads)
    buf = out.read_bytes()
    per = 8 + 4 * total
    norms, ws = [], []
    for k in range(len(grads)):
        c = buf[k * per:(k + 1) * per]
        norms.append(np.frombuffer(c[:8], np.float64)[0])
        ws.append(np.frombuffer(c[8:], np.float32))
    rest = np.frombuffer(buf[len(grads) * per:], np.float32)
    assert rest.size == 2 * total
    return norms, ws, rest[:total], rest[total:], buf


def split(flat, shapes):
    out, o = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[o:o + n].reshape(s))
        o += n
    return out


def random_problem(rng, zero_tensor=None):
    w0 = [rng.standard_normal(s).astype(np.float32) * rng.uniform(0.2, 2) for s, _ in SHAPES]
    if zero_tensor is not None:
        w0[zero_tensor][...] = 0.0
    grads = [[rng.standard_normal(s).astype(np.float32) * rng.uniform(0.05, 1) for s, _ in SHAPES]
             for _ in range(STEPS)]
    return w0, grads


def torch_run(make_opt, w0, grads, lr_list, maxnorm):
    """Runs a torch optimizer in float64 from the same float32 starting point; returns the weights
    after each step, the clip norms, the optimizer and its parameters, and per tensor and state
    key the largest norm that state reached over the steps (the floor for comparing it)."""
    params = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in w0]
    opt = make_opt(params)
    ws, norms = [], []
    peak = [dict() for _ in params]
    for k, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g, dtype=torch.float64)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, maxnorm)))
        for grp in opt.param_groups:
            grp["lr"] = lr_list[k]
        opt.step()
        ws.append([p.detach().numpy().copy() for p in params])
        for i, p in enumerate(params):
            for key, val in opt.state[p].items():
                if torch.is_tensor(val) and val.numel() == p.numel():
                    peak[i][key] = max(peak[i].get(key, 0.0), float(val.norm()))
    return ws, norms, opt, params, peak


def groups(params, wd):
    return [{"params": [p for p, (_, f) in zip(params, SHAPES) if f], "weight_decay": wd},
            {"params": [p for p, (_, f) in zip(params, SHAPES) if not f], "weight_decay": 0.0}]


def check_weights(ours, ref_ws, w0, tol=1e-5):
    """Per step and tensor: relative error below tol (against the tensor's starting size when
    it is larger, for a tensor that wanders close to zero)."""
    shapes = [s for s, _ in SHAPES]
    for k in range(STEPS):
        for i, (a, b) in enumerate(zip(split(ours[k], shapes), ref_ws[k])):
            e = rel(a, b, np.linalg.norm(w0[i]))
            assert e < tol, (k, i, e)


@pytest.mark.parametrize("maxnorm", [1.0, 1e6])
def test_adamw_vs_torch(tmp, maxnorm):
    rng = np.random.default_rng()
    w0, grads = random_problem(rng)
    lr_list, wd = lrs(0.05), 0.05
    norms, ws, m, v, _ = run_tool(tmp, "adamw", w0, grads, lr_list, maxnorm=maxnorm, wd=wd)
    ref_ws, ref_norms, opt, params, peak = torch_run(
        lambda ps: torch.optim.AdamW(groups(ps, wd), lr=lr_list[0], betas=(0.9, 0.999), eps=1e-8),
        w0, grads, lr_list, maxnorm)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    check_weights(ws, ref_ws, w0)
    shapes = [s for s, _ in SHAPES]
    for i, p in enumerate(params):
        st = opt.state[p]
        assert rel(split(m, shapes)[i], st["exp_avg"], peak[i]["exp_avg"]) < 1e-5
        assert rel(split(v, shapes)[i], st["exp_avg_sq"], peak[i]["exp_avg_sq"]) < 1e-5


@pytest.mark.parametrize("mom", [0.9, 0.0])
def test_sgd_vs_torch(tmp, mom):
    rng = np.random.default_rng()
    w0, grads = random_problem(rng)
    lr_list, wd = lrs(0.3), 1e-2
    norms, ws, m, _, _ = run_tool(tmp, "sgd", w0, grads, lr_list, mom=mom, wd=wd)
    ref_ws, ref_norms, opt, params, peak = torch_run(
        lambda ps: torch.optim.SGD(groups(ps, wd), lr=lr_list[0], momentum=mom), w0, grads,
        lr_list, 1.0)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    check_weights(ws, ref_ws, w0)
    if mom:
        shapes = [s for s, _ in SHAPES]
        for i, p in enumerate(params):
            buf = opt.state[p]["momentum_buffer"]
            assert rel(split(m, shapes)[i], buf, peak[i]["momentum_buffer"]) < 1e-5
    else:
        assert not np.any(m)


@pytest.mark.parametrize("wd,zero", [(1e-6, None), (0.1, None), (0.1, 2), (0.0, None)])
def test_lars_vs_reference(tmp, wd, zero):
    """Both groups, against optim_ref.lars_step (lightly's rule). zero: a weight-decay tensor that
    starts at zero (‖p‖ = 0: no decay, no trust ratio on that step). wd 0: LARS scaling off."""
    rng = np.random.default_rng()
    w0, grads = random_problem(rng, zero_tensor=zero)
    lr_list, tc = lrs(1.8 * math.sqrt(128 / 1536)), 0.001
    norms, ws, m, _, _ = run_tool(tmp, "lars", w0, grads, lr_list, wd=wd, tc=tc)
    params = [torch.tensor(w, dtype=torch.float64) for w in w0]
    wds = [wd if f else 0.0 for _, f in SHAPES]
    bufs = [None] * len(params)
    peak = [0.0] * len(params)
    for k in range(STEPS):
        gs = [torch.tensor(g, dtype=torch.float64) for g in grads[k]]
        total = math.sqrt(sum(float((g * g).sum()) for g in gs))
        assert abs(norms[k] - total) <= 1e-6 * total
        coef = 1.0 / (total + 1e-6)
        if coef < 1:
            gs = [g * coef for g in gs]
        optim_ref.lars_step(params, gs, bufs, lr_list[k], wds, momentum=0.9, trust_coef=tc,
                            eps=1e-8)
        for i, (a, b) in enumerate(zip(split(ws[k], [s for s, _ in SHAPES]), params)):
            e = rel(a, b, np.linalg.norm(w0[i]))
            assert e < 1e-5, (k, i, e)
            peak[i] = max(peak[i], float(bufs[i].norm()))
    for i, (a, b) in enumerate(zip(split(m, [s for s, _ in SHAPES]), bufs)):
        assert rel(a, b, peak[i]) < 1e-5
    if zero is not None:
        # The zero tensor moved (by -lr·g on the first step), so the trust ratio applied later.
        assert np.any(split(ws[0], [s for s, _ in SHAPES])[zero] != 0)


def test_lars_no_wd_group_is_torch_sgd(tmp):
    """The weight-decay-0 group of LARS is exactly torch.optim.SGD(momentum=0.9)."""
    rng = np.random.default_rng()
    w0, grads = random_problem(rng)
    lr_list = lrs(0.5)
    flags = [0] * len(SHAPES)
    _, ws, _, _, _ = run_tool(tmp, "lars", w0, grads, lr_list, wd=1e-6, flags=flags)
    ref_ws, _, _, _, _ = torch_run(
        lambda ps: torch.optim.SGD(ps, lr=lr_list[0], momentum=0.9, weight_decay=0.0), w0,
        grads, lr_list, 1.0)
    check_weights(ws, ref_ws, w0)


@pytest.mark.parametrize("maxnorm", [0.5, 3.0, 1e6, 0.0])
def test_clip_grad_norm_vs_torch(tmp, maxnorm):
    """SGD without momentum/decay at lr 1 from zero weights leaves w = −(clipped g) exactly."""
    rng = np.random.default_rng()
    _, grads = random_problem(rng)
    w0 = [np.zeros(s, np.float32) for s, _ in SHAPES]
    norms, ws, _, _, _ = run_tool(tmp, "sgd", w0, grads[:1], [1.0], maxnorm=maxnorm, mom=0.0,
                                  wd=0.0)
    gs = [torch.tensor(g) for g in grads[0]]  # float32, as in training
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in gs]
    for p, g in zip(params, gs):
        p.grad = g.clone()
    if maxnorm > 0:
        ref = float(torch.nn.utils.clip_grad_norm_(params, maxnorm))
    else:
        ref = math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs))
    assert abs(norms[0] - ref) <= 1e-6 * ref
    for a, p in zip(split(-ws[0], [s for s, _ in SHAPES]), params):
        assert rel(a, p.grad) < 1e-6
    if maxnorm == 0.0 or maxnorm > ref:
        for a, g in zip(split(-ws[0], [s for s, _ in SHAPES]), grads[0]):
            np.testing.assert_array_equal(a, g)


@pytest.mark.parametrize("kind", ["lars", "adamw", "sgd"])
def test_state_round_trip_is_bit_identical(tmp, kind):
    """Restoring m, v and the step count into a fresh optimizer after 2 steps (what a checkpoint
    does) ends bit-identical to the uninterrupted run."""
    rng = np.random.default_rng()
    w0, grads = random_problem(rng)
    lr_list = lrs(0.1)
    a = run_tool(tmp, kind, w0, grads, lr_list, wd=1e-3, tag="a")[4]
    b = run_tool(tmp, kind, w0, grads, lr_list, wd=1e-3, resume_at=2, tag="b")[4]
    assert a == b


def test_thread_count_does_not_change_results(tmp):
    """Norms run over fixed chunks and updates are elementwise: 1 and 2 threads agree bit for bit
    on a tensor big enough to be split (above the parallel threshold and the norm chunk)."""
    rng = np.random.default_rng()
    w0 = [rng.standard_normal(150_001).astype(np.float32), rng.standard_normal(9).astype(np.float32)]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in w0] for _ in range(2)]
    outs = []
    for th in ("1", "2"):
        outs.append(run_tool(tmp, "lars", w0, grads, [0.5, 0.4], wd=1e-4, flags=[1, 0],
                             env={"OMP_NUM_THREADS": th}, tag="t" + th)[4])
    assert outs[0] == outs[1]


SCHED = [(1, 1, None), (3, 1, None), (7, 3, None), (2, 10, None), (5, 100, None),
         (3, 3000, None), (4, 150, None), (13, 7, None), (1, 2, None), (4, 20, 0.5),
         (3, 10, 0), (2, 5, 4.75), (6, 30, 2)]


@pytest.mark.parametrize("spe,epochs,we", SCHED)
def test_schedule_vs_design_formula(spe, epochs, we):
    r = run([tool("method_tool"), "sched", spe, epochs, -1 if we is None else we])
    vals = r.stdout.split()
    W = optim_ref.warmup_steps(spe, epochs, we)
    assert int(vals[0]) == W
    T = spe * epochs
    got = np.array([float(v) for v in vals[1:]])
    assert got.size == T
    ref = np.array([optim_ref.schedule(k, T, W) for k in range(T)])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    assert np.all(np.isfinite(got)) and np.all(got > 0)


def test_schedule_edges():
    # epochs 3, spe 3: 3·0.3 = 0.8999… → W = 0 (no warmup, no division by zero).
    assert optim_ref.warmup_steps(3, 3) == 0
    r = run([tool("method_tool"), "sched", 3, 3, -1])
    v = [float(x) for x in r.stdout.split()]
    assert v[0] == 0 and v[1] == 1.0 and v[-1] == 0.001
    # One step in total: M = 1, the multiplier is the end value.
    r = run([tool("method_tool"), "sched", 1, 1, -1])
    assert [float(x) for x in r.stdout.split()] == [0.0, 0.001]


@pytest.mark.parametrize("kind,B,lr", [("lars", 1536, 1.8), ("lars", 128, 1.8 * math.sqrt(128 / 1536)),
                                       ("sgd", 256, 1.8 * math.sqrt(256 / 1536)),
                                       ("adamw", 128, 5e-4), ("adamw", 4096, 5e-4)])
def test_default_lr(kind, B, lr):
    r = run([tool("method_tool"), "lr", kind, B])
    assert float(r.stdout) == pytest.approx(lr, rel=1e-15)


def test_unknown_optimizer_is_an_error():
    r = run([tool("method_tool"), "lr", "adam", 128], check=False)
    assert r.returncode == 1
    assert "unknown optimizer 'adam': use lars, adamw or sgd" in r.stderr
