"""lt-eval and lib/eval against independent references, on fresh random inputs.

  kNN            DINO's weighted kNN (eval_knn.py) rewritten in NumPy float64: identical
                 predictions on every row that is not a near tie (the k-th and (k+1)-th
                 similarities closer than 1e-5, or the two best class votes within 1e-6
                 relative: float32 vs float64 similarities may order those differently)
  linear probe   torch.optim.LBFGS (float64, strong Wolfe, to a gradient of 1e-10) on the same
                 prepared features and weight decay: objective within 1e-8, W and the centred
                 bias within 1e-3 of torch's optimum (≤ ‖gradient‖ / weight decay), same
                 predictions; the sweep's held-out accuracies equal torch's, its choice is their
                 argmax (ties: the larger decay), and the refit's val accuracy equals torch's
  preprocessing  torchvision Resize(int(s/0.875)) + CenterCrop(s) on PIL images: exact (0 uint8
                 levels: lt_resize is PIL's fixed-point resampling, the crop offsets torchvision's
                 half-to-even rounding; PNG inputs, so the decoders agree exactly)
  features       torchvision resnet18 in eval mode (float64, fc = Identity) with the same weights,
                 loaded from a safetensors file, on torchvision's transform of the same images:
                 relative error ‖ours − ref‖ / ‖ref‖ ≤ 1e-4 (float32 accumulation)
  end to end     lt-eval on a generated labelled folder: table, JSON schema and numbers (kNN
                 recomputed with NumPy from the student's features), every error case."""
import json
import os

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

from conftest import BIN, run, tool
from embed_fixtures import tiny_teacher
import st_io

LT_EVAL = os.path.join(BIN, "lt-eval")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---- kNN ---------------------------------------------------------------------------------------

def clustered(rng, n, D, C, spread=1.0):
    """Features around C random centres (labels random), rows scaled by random factors so the
    cosine normalisation is exercised."""
    centres = rng.normal(size=(C, D))
    y = rng.integers(0, C, n).astype(np.int32)
    x = centres[y] + spread * rng.normal(size=(n, D))
    x *= rng.uniform(0.1, 10, (n, 1))
    return x.astype(np.float32), y


def knn_reference(train, ytrain, val, k, T, C):
    """DINO's weighted kNN in float64: normalise, cosine similarity, top-k, exp(s/T) votes.
    Returns predictions and a mask of near-tie rows."""
    tn = train / np.linalg.norm(train.astype(np.float64), axis=1, keepdims=True)
    vn = val / np.linalg.norm(val.astype(np.float64), axis=1, keepdims=True)
    sim = vn @ tn.T
    k = min(k, len(train))
    order = np.argsort(-sim, axis=1, kind="stable")
    top = order[:, :k]
    s = np.take_along_axis(sim, top, 1)
    votes = np.zeros((len(val), C))
    np.add.at(votes, (np.arange(len(val))[:, None].repeat(k, 1), ytrain[top]), np.exp(s / T))
    pred = votes.argmax(1)
    tie = np.zeros(len(val), bool)
    if k < len(train):
        kth = np.take_along_axis(sim, order[:, k - 1:k + 1], 1)
        tie |= (kth[:, 0] - kth[:, 1]) < 1e-5
    sv = np.sort(votes, 1)
    if C > 1:
        tie |= (sv[:, -1] - sv[:, -2]) <= 1e-6 * sv[:, -1]
    return pred, tie


def write_sets(d, train, ytrain, val, yval):
    train.astype("<f4").tofile(d / "train.f32")
    ytrain.astype("<i4").tofile(d / "train_labels.i32")
    val.astype("<f4").tofile(d / "val.f32")
    yval.astype("<i4").tofile(d / "val_labels.i32")


def parse(out):
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("k,n_train", [(20, 300), (1, 300), (7, 5), (20, 1000)])
def test_knn_matches_dino_reference(tmp, k, n_train):
    rng = np.random.default_rng()
    D, C, T = 24, 6, 0.07
    x, y = clustered(rng, n_train + 200, D, C, spread=2.0)
    train, ytrain, val, yval = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    write_sets(tmp, train, ytrain, val, yval)
    out = parse(run([tool("eval_tool"), "knn", tmp, D, k, T, C]).stdout)
    pred = np.array(out["pred"], int)
    ref, tie = knn_reference(train, ytrain, val, k, T, C)
    assert tie.mean() < 0.05
    assert (pred[~tie] == ref[~tie]).all()
    assert float(out["top1"][0]) == pytest.approx((pred == yval).mean(), abs=1e-12)
    assert abs((pred == yval).mean() - (ref == yval).mean()) <= tie.mean() + 1e-12


def test_knn_rejects_zero_feature(tmp):
    rng = np.random.default_rng()
    x, y = clustered(rng, 40, 8, 3)
    x[5] = 0
    write_sets(tmp, x[:30], y[:30], x[30:], y[30:])
    r = run([tool("eval_tool"), "knn", tmp, 8, 5, 0.07, 3], check=False)
    assert r.returncode == 1 and "training feature 5 has norm 0" in r.stderr


# ---- linear probe ------------------------------------------------------------------------------

def objective(X, y, W, b, wd):
    Z = X @ W.T + b
    m = Z.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(Z - m).sum(1)))
    return float((lse - Z[np.arange(len(y)), y]).mean() + 0.5 * wd * (W ** 2).sum())


def torch_fit(X, y, C, wd):
    """Multinomial logistic regression to convergence with torch's L-BFGS in float64."""
    Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
    W = torch.zeros(C, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=20000, tolerance_grad=1e-10,
                            tolerance_change=0, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xt @ W.T + b, yt) + 0.5 * wd * (W ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    W, b = W.detach().numpy(), b.detach().numpy()
    return W, b - b.mean()


def prepare(fit, other):
    """The documented preparation: L2-normalise rows, standardise with the fit rows' stats."""
    def l2(a):
        a = a.astype(np.float64)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    f, o = l2(fit), l2(other)
    mean, sd = f.mean(0), f.std(0)
    scale = np.where(sd > 1e-12, 1 / np.where(sd > 1e-12, sd, 1), 1)
    return (f - mean) * scale, (o - mean) * scale


def predict(X, W, b):
    Z = X @ W.T + b
    s = np.sort(Z, 1)
    return Z.argmax(1), (s[:, -1] - s[:, -2]) < 1e-6


@pytest.mark.parametrize("wd", [1e-3, 1e-2, 1e-1])
def test_linear_fit_reaches_torch_optimum(tmp, wd):
    rng = np.random.default_rng()
    N, D, C = 150, 12, 4
    x, y = clustered(rng, N + 60, D, C, spread=3.0)
    X, Xv = prepare(x[:N], x[N:])
    y, yv = y[:N], y[N:]
    X.astype("<f8").tofile(tmp / "X.f64")
    y.astype("<i4").tofile(tmp / "y.i32")
    words = run([tool("eval_tool"), "fit", tmp, N, D, C, repr(wd)]).stdout.split()
    out = {words[i]: [words[i + 1]] for i in range(0, len(words), 2)}
    assert out["converged"] == ["1"]
    wb = np.fromfile(tmp / "wb.f64", "<f8")
    W, b = wb[:C * D].reshape(C, D), wb[C * D:]
    assert abs(b.sum()) < 1e-9                                   # centred bias
    Wt, bt = torch_fit(X, y, C, wd)
    f_ours, f_torch = objective(X, y, W, b, wd), objective(X, y, Wt, bt, wd)
    assert float(out["loss"][0]) == pytest.approx(f_ours, abs=1e-12)
    assert abs(f_ours - f_torch) <= 1e-8, (f_ours, f_torch)
    assert np.abs(W - Wt).max() <= 1e-3 * max(1, np.abs(Wt).max())
    assert np.abs(b - bt).max() <= 1e-3 * max(1, np.abs(bt).max())
    p, tie = predict(Xv, W, b)
    pt, _ = predict(Xv, Wt, bt)
    assert (p[~tie] == pt[~tie]).all()


def holdout_rule(y):
    """Every 5th image of each class, in list order (positions 4, 9, ...), is held out."""
    seen, held = {}, []
    for c in y:
        held.append(seen.get(c, 0) % 5 == 4)
        seen[c] = seen.get(c, 0) + 1
    return np.array(held)


def test_sweep_chooses_best_holdout_and_refits(tmp):
    rng = np.random.default_rng()
    D, C = 16, 3
    x, y = clustered(rng, 260, D, C, spread=5.0)   # overlapping classes: the decay matters
    train, ytrain, val, yval = x[:200], y[:200], x[200:], y[200:]
    write_sets(tmp, train, ytrain, val, yval)
    held = holdout_rule(ytrain)
    out = parse(run([tool("eval_tool"), "split", tmp, len(ytrain)]).stdout)
    assert (np.array(out["held"], int) == held).all()
    out = parse(run([tool("eval_tool"), "probe", tmp, D, C]).stdout)
    wds = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    ours = [float(a) for a in out["holdout"]]
    assert int(out["n_holdout"][0]) == held.sum()
    Xf, Xh = prepare(train[~held], train[held])
    for wd, acc in zip(wds, ours):
        W, b = torch_fit(Xf, ytrain[~held], C, wd)
        p, tie = predict(Xh, W, b)
        ref = (p == ytrain[held]).mean()
        assert abs(acc - ref) <= tie.mean() + 1e-12, (wd, acc, ref)
    best = max(range(5), key=lambda k: (ours[k], k))          # ties: the larger decay
    assert float(out["wd"][0]) == wds[best]
    X, Xv = prepare(train, val)
    W, b = torch_fit(X, ytrain, C, wds[best])
    p, tie = predict(Xv, W, b)
    pred = np.array(out["pred"], int)
    assert (pred[~tie] == p[~tie]).all()
    assert float(out["top1"][0]) == pytest.approx((pred == yval).mean(), abs=1e-12)


# ---- preprocessing and features ----------------------------------------------------------------

def noise_png(path, w, h, rng):
    yy, xx = np.mgrid[0:h, 0:w]
    a = rng.integers(0, 256, (h, w, 3)).astype(np.int64)
    a[..., 1] = (a[..., 1] + 255 * xx // max(w, 1)) // 2      # some structure besides noise
    Image.fromarray(a.astype(np.uint8)).save(path)


def tv_crop(path, size):
    tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size)])
    return np.asarray(tf(Image.open(path).convert("RGB")))


# (w, h): landscape, portrait, square, upsampled, exactly the resize side, crop offsets x.5
SIZES = [(37, 50), (50, 37), (36, 36), (20, 15), (41, 36), (36, 39), (300, 47), (123, 457)]


@pytest.mark.parametrize("size", [32, 224])
def test_preprocess_matches_torchvision(tmp, size):
    rng = np.random.default_rng()
    sizes = SIZES + [(640, 480), (259, 256)] if size == 224 else SIZES
    for w, h in sizes:
        src = tmp / f"im_{w}x{h}.png"
        noise_png(src, w, h, rng)
        run([tool("eval_tool"), "preprocess", size, src, tmp / "out.raw"])
        ours = np.fromfile(tmp / "out.raw", np.uint8).reshape(size, size, 3)
        ref = tv_crop(src, size)
        assert np.array_equal(ours, ref), (w, h, np.abs(ours.astype(int) - ref).max())


def torchvision_resnet18_weights(path):
    """torchvision's resnet18 init with random BN statistics and affine parameters (so that
    eval-mode BN is exercised), saved as safetensors; returns the model (fc = Identity)."""
    m = torchvision.models.resnet18()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(1 + 0.3 * torch.randn_like(mod.weight))
                mod.bias.copy_(0.3 * torch.randn_like(mod.bias))
                mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(1 + torch.rand_like(mod.running_var))
    st_io.save(path, {k: v for k, v in m.state_dict().items()})    # fc.* included: ignored
    m.fc = torch.nn.Identity()
    return m.eval()


def test_student_features_match_torchvision(tmp):
    rng = np.random.default_rng()
    model = torchvision_resnet18_weights(tmp / "r18.safetensors")
    names = []
    for i, (w, h) in enumerate([(70, 50), (64, 64), (50, 91), (120, 80), (33, 40)]):
        names.append(f"{i}.png")
        noise_png(tmp / names[-1], w, h, rng)
    size = 64
    out = run([tool("eval_tool"), "features", "resnet18", tmp / "r18.safetensors", size, 2,
               tmp / "f.f32", tmp, *names]).stdout
    assert out.split() == ["skipped"] + ["0"] * len(names)
    ours = np.fromfile(tmp / "f.f32", np.float32).reshape(len(names), 512)
    tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize(MEAN, STD)])
    x = torch.stack([tf(Image.open(tmp / n).convert("RGB")) for n in names])
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    err = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert err <= 1e-4, err


# ---- end to end --------------------------------------------------------------------------------

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def labelled_folder(root, n_train=6, n_val=3, seed=None):
    """DIR/{train,val}/<colour>/*.png: noisy images of the class's colour with a random shape."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, rgb in COLOURS.items():
            os.makedirs(root / split / c, exist_ok=True)
            for i in range(n):
                w, h = int(rng.integers(30, 60)), int(rng.integers(30, 60))
                a = rng.normal(128, 30, (h, w, 3))
                y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                a[y0:y0 + h // 2, x0:x0 + w // 2] = rgb
                Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
                    root / split / c / f"{i:02d}.png")
    return root


def test_end_to_end_report(tmp):
    data = labelled_folder(tmp / "data")
    (data / "val" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    torchvision_resnet18_weights(tmp / "r18.safetensors")
    teacher = tiny_teacher(str(tmp / "t.safetensors"), dim=64, depth=1, grid=2)
    r = run([LT_EVAL, "--weights", tmp / "r18.safetensors", "--student", "resnet18", "--teacher",
             teacher, "--random-init", "--image-size", 28, "--knn-k", 5, "--json",
             tmp / "r.json", "--threads", 2, data])
    assert "skipping val/red/broken.jpg" in r.stderr
    lines = r.stdout.splitlines()
    assert [l.split()[0] for l in lines[2:]] == ["student", "teacher", "random-init"]
    rep = json.loads((tmp / "r.json").read_text())
    assert set(rep) == {"models", "data", "image_size", "knn_k", "knn_temperature"}
    assert rep["data"] == {"dir": str(data), "classes": 3, "train_images": 18, "val_images": 9,
                           "skipped": 1}
    assert rep["image_size"] == 28 and rep["knn_k"] == 5
    names = [m["name"] for m in rep["models"]]
    assert names == ["student", "teacher", "random-init"]
    for m in rep["models"]:
        assert set(m) == {"name", "arch", "weights", "feature_dim", "knn_top1", "linear_top1",
                          "linear_weight_decay", "features_per_s"}
        assert 0 <= m["knn_top1"] <= 1 and 0 <= m["linear_top1"] <= 1
        assert m["linear_weight_decay"] in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
        assert m["features_per_s"] > 0
    st, te, ri = rep["models"]
    assert (st["arch"], st["weights"], st["feature_dim"]) == ("resnet18",
                                                               str(tmp / "r18.safetensors"), 512)
    assert (te["arch"], te["weights"], te["feature_dim"]) == ("dinov2", teacher, 64)
    assert (ri["arch"], ri["weights"], ri["feature_dim"]) == ("resnet18", None, 512)
    # the student's kNN number, recomputed from its features with the NumPy reference
    files, labels = [], []
    for split in ("train", "val"):
        for c, name in enumerate(sorted(COLOURS)):
            for f in sorted(os.listdir(data / split / name)):
                if f.endswith(".png"):
                    files.append(f"{split}/{name}/{f}")
                    labels.append(c)
    run([tool("eval_tool"), "features", "resnet18", tmp / "r18.safetensors", 28, 32,
         tmp / "f.f32", data, *files])
    feat = np.fromfile(tmp / "f.f32", np.float32).reshape(len(files), 512)
    labels = np.array(labels)
    pred, tie = knn_reference(feat[:18], labels[:18], feat[18:], 5, 0.07, 3)
    # near ties (see knn_reference) may go either way; each moves the accuracy by 1/9 at most
    assert abs(st["knn_top1"] - (pred == labels[18:]).mean()) <= tie.mean() + 1e-6


def test_no_linear_and_quiet(tmp):
    data = labelled_folder(tmp / "data", n_train=3, n_val=2)
    r = run([LT_EVAL, "--random-init", "--no-linear", "-q", "--image-size", 32, "--json",
             tmp / "r.json", data])
    assert r.stderr == ""
    assert "random-init" in r.stdout
    m = json.loads((tmp / "r.json").read_text())["models"][0]
    assert m["linear_top1"] is None and m["linear_weight_decay"] is None


def test_help_lists_every_option():
    r = run([LT_EVAL, "--help"])
    for opt in ["--weights", "--student", "--teacher", "--random-init", "--seed", "--image-size",
                "--batch-size", "--knn-k", "--knn-temperature", "--no-linear", "--json",
                "--max-pixels", "--threads", "--quiet", "--verbose", "--help", "--version"]:
        assert opt in r.stdout
    assert run([LT_EVAL, "--version"]).stdout.startswith("lt-eval ")


def resnet50_head(path):
    """The first tensors of a resnet50 state_dict (its stem and the first bottleneck's conv1)."""
    sd = torchvision.models.resnet50().state_dict()
    keep = list(sd)[:list(sd).index("layer1.0.conv1.weight") + 1]
    st_io.save(path, {k: sd[k] for k in keep})


@pytest.mark.parametrize("case", ["no_train", "no_val", "no_classes", "empty_class",
                                  "extra_val_class", "extra_train_class", "missing_dir",
                                  "wrong_arch", "teacher_size"])
def test_errors(tmp, case):
    data = labelled_folder(tmp / "data", n_train=2, n_val=1)
    args, want = ["--random-init", "--image-size", 32], None
    if case == "no_train":
        os.rename(data / "train", tmp / "elsewhere")
        want = f"{data} has no train/ folder"
    elif case == "no_val":
        os.rename(data / "val", tmp / "elsewhere")
        want = f"{data} has no val/ folder"
    elif case == "no_classes":
        for c in COLOURS:
            os.rename(data / "val" / c, tmp / c)
        (data / "val" / "loose.png").write_bytes((tmp / "red" / "00.png").read_bytes())
        want = f"{data}/val has no class folders"
    elif case == "empty_class":
        os.makedirs(data / "train" / "yellow")
        os.makedirs(data / "val" / "yellow")
        (data / "train" / "yellow" / "notes.txt").write_text("no image here")
        want = f"{data}/train/yellow: the class 'yellow' holds no images"
    elif case == "extra_val_class":
        os.makedirs(data / "val" / "purple")
        want = f"class 'purple' is not in {data}/train"
    elif case == "extra_train_class":
        os.makedirs(data / "train" / "cyan")
        want = f"class 'cyan' is not in {data}/val"
    elif case == "missing_dir":
        data = tmp / "nope"
        want = "nope"
    elif case == "wrong_arch":
        resnet50_head(tmp / "r50.safetensors")
        args = ["--weights", tmp / "r50.safetensors", "--student", "resnet18"]
        want = ("tensor 'layer1.0.conv1.weight' has shape (64, 64, 1, 1), a resnet18 has "
                "(64, 64, 3, 3)")
    elif case == "teacher_size":
        t = tiny_teacher(str(tmp / "t.safetensors"), dim=64, depth=1, grid=2)
        args = ["--teacher", t, "--image-size", 32]
        want = "--image-size 32 is not a multiple of the teacher's patch size 14"
    r = run([LT_EVAL, *args, data], check=False)
    assert r.returncode == 1, r.stderr
    assert want in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args,want", [
    ([], "no model given"),
    (["--random-init", "--knn-k", "0"], "--knn-k"),
    (["--random-init", "--image-size", "abc"], "--image-size"),
    (["--random-init", "--batch-size", "-1"], "--batch-size"),
    (["--random-init", "--knn-temperature", "0"], "--knn-temperature"),
    (["--random-init", "--threads", "x"], "--threads"),
    (["--random-init", "--student", "resnet101"], "--student"),
])
def test_usage_errors(tmp, args, want):
    data = labelled_folder(tmp / "data", n_train=1, n_val=1)
    r = run([LT_EVAL, *args, data], check=False)
    assert r.returncode == 2 and want in r.stderr, r.stderr


def test_lt_train_outputs_load(tmp):
    """lt-train's student.safetensors and its checkpoint (head, optimizer state and queue
    ignored) load as the same student: identical reports."""
    from train_fixtures import lt_train, tiny_cache
    cache, _ = tiny_cache(tmp, n_images=8, views=1, size=64)
    run([lt_train(), cache, "--out", tmp / "out", "--steps", 1, "--batch-size", 4, "-q"])
    data = labelled_folder(tmp / "data", n_train=3, n_val=2)
    reports = []
    for w in ("student.safetensors", "checkpoints/last.safetensors"):
        run([LT_EVAL, "--weights", tmp / "out" / w, "--image-size", 32, "-q", "--json",
             tmp / "r.json", data])
        m = json.loads((tmp / "r.json").read_text())["models"][0]
        reports.append((m["knn_top1"], m["linear_top1"], m["linear_weight_decay"]))
    assert reports[0] == reports[1]
