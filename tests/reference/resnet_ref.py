"""PyTorch references for the CNN ops (lib/nn/cnn.h) and the ResNet students (lib/models/resnet.h).

Why it exists: tests/py/test_resnet.py drives build/tests/tools/resnet_tool (the C side) and
compares with what these functions compute in torch, on fresh random inputs. Layout conventions:
our activations are NHWC, torch's NCHW; weights are in torch's layout on both sides. Raw tensors
travel as float32 files (<name>.f32) in a directory. References run in float64 (from the same
float32 inputs) so that the measured error is ours, not torch's float32 rounding.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision


def rel_err(ours, ref):
    """‖ours − ref‖ / ‖ref‖ over the whole tensor (float64)."""
    ours = np.asarray(ours, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    den = np.linalg.norm(ref)
    num = np.linalg.norm(ours - ref)
    return float(num / den) if den > 0 else float(num)


def randn(*shape, scale=1.0):
    """Fresh (unseeded) standard-normal float32 numpy array."""
    return (torch.randn(*shape) * scale).numpy().astype(np.float32)


def put(d, **arrays):
    for k, v in arrays.items():
        np.ascontiguousarray(v, dtype=np.float32).tofile(os.path.join(d, k + ".f32"))


def get(d, name, shape=None):
    a = np.fromfile(os.path.join(d, name + ".f32"), dtype=np.float32)
    return a.reshape(shape) if shape is not None else a


def nhwc(t):
    """NCHW torch tensor → NHWC numpy."""
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def nchw(a):
    """NHWC numpy → NCHW float64 torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(a)).double().permute(0, 3, 1, 2).contiguous()


# ---- single ops -------------------------------------------------------------------------------

def conv_ref(x, w, dy, stride, pad):
    """x (B,H,W,Cin) NHWC, w (Cout,Cin,kh,kw), dy (B,OH,OW,Cout) → y, dx, dw (NHWC / torch)."""
    xt = nchw(x).requires_grad_()
    wt = torch.from_numpy(w).double().requires_grad_()
    y = F.conv2d(xt, wt, stride=stride, padding=pad)
    y.backward(nchw(dy))
    return nhwc(y), nhwc(xt.grad), wt.grad.numpy()


def bn_ref(x, gamma, beta, rm, rv, dy, relu, res=None):
    """Training-mode BatchNorm2d on x (M,C) (as (1,C,M,1)), then + res, then ReLU.
    Returns y, rm', rv', dx, dgamma, dbeta, dres, y_eval (eval mode with the updated stats)."""
    M, C = x.shape
    bn = torch.nn.BatchNorm2d(C).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
        bn.running_mean.copy_(torch.from_numpy(rm))
        bn.running_var.copy_(torch.from_numpy(rv))
    to4 = lambda a: torch.from_numpy(np.ascontiguousarray(a)).double().t().reshape(1, C, M, 1)
    from4 = lambda t: t.detach().reshape(C, M).t().numpy()
    xt = to4(x).requires_grad_()
    rt = to4(res).requires_grad_() if res is not None else None
    bn.train()
    y = bn(xt)
    if rt is not None:
        y = y + rt
    if relu:
        y = F.relu(y)
    y.backward(to4(dy))
    bn.eval()
    with torch.no_grad():
        ye = bn(to4(x))
        if rt is not None:
            ye = ye + to4(res)
        if relu:
            ye = F.relu(ye)
    return (from4(y), bn.running_mean.detach().numpy(), bn.running_var.detach().numpy(),
            from4(xt.grad), bn.weight.grad.numpy(), bn.bias.grad.numpy(),
            from4(rt.grad) if rt is not None else None, from4(ye))


def maxpool_ref(x, dy, k, stride, pad):
    xt = nchw(x).float().requires_grad_()  # float32: argmax ties must be decided on our values
    y = F.max_pool2d(xt, k, stride, pad)
    y.backward(nchw(dy).float())
    return nhwc(y), nhwc(xt.grad)


# ---- whole models ---------------------------------------------------------------------------

def read_manifest(text):
    """Lines "name kind ndim dims... wd" → list of (name, kind, shape, wd)."""
    out = []
    for line in text.strip().splitlines():
        f = line.split()
        nd = int(f[2])
        out.append((f[0], f[1], tuple(int(v) for v in f[3:3 + nd]), int(f[3 + nd])))
    return out


def torch_backbone(arch):
    """torchvision's model with fc replaced by Identity: features after global average pooling."""
    m = getattr(torchvision.models, arch)()
    m.fc = torch.nn.Identity()
    return m


def flatten_state(manifest, sd):
    """All tensors of a state_dict in manifest order, as one float32 array (counters as floats)."""
    parts = [sd[name].detach().double().reshape(-1).numpy() for name, _, _, _ in manifest]
    return np.concatenate(parts).astype(np.float32)


def unflatten(manifest, flat, kinds=("param", "buffer", "i64")):
    """Inverse of flatten_state for the tensors of the given kinds, as float64 torch tensors."""
    out, off = {}, 0
    for name, kind, shape, _ in manifest:
        if kind not in kinds:
            continue
        n = int(np.prod(shape)) if shape else 1
        out[name] = torch.from_numpy(flat[off:off + n].astype(np.float64)).reshape(shape)
        off += n
    assert off == flat.size, (off, flat.size)
    return out


class _ReLUs(torch.nn.Module):
    """Stands in for every ReLU of a torchvision ResNet (they are called in a fixed order each
    forward). Records its outputs; or, given masks, follows them: y = x · mask."""

    def __init__(self):
        super().__init__()
        self.outputs, self.masks = [], None

    def forward(self, x):
        if self.masks is None:
            y = F.relu(x)
        else:
            y = x * self.masks[len(self.outputs)]
        self.outputs.append(y.detach())
        return y


class _MaxPool(torch.nn.Module):
    """MaxPool2d(3, 2, 1) that, given winners (B, C, OH, OW) as flat h·w indices, routes through
    them instead of deciding."""

    def __init__(self):
        super().__init__()
        self.argmax = None

    def forward(self, x):
        if self.argmax is None:
            return F.max_pool2d(x, 3, 2, 1)
        B, C, OH, OW = self.argmax.shape
        return x.flatten(2).gather(2, self.argmax.flatten(2)).view(B, C, OH, OW)


def model_ref(arch, manifest, init_flat, x, dfeat, relu_out=None, argmax=None):
    """torchvision `arch` (float64, fc = Identity) loaded with init_flat: one training-mode
    forward on x (B,H,W,3) NHWC and the backward of (features·dfeat).sum(), then an eval-mode
    forward. With relu_out (all ReLU outputs of our forward, concatenated NHWC in call order) and
    argmax (our max pool winners, (B,OH,OW,64)) the ReLUs and the max pool follow our discrete
    decisions instead of taking their own (see test_resnet.py); the arithmetic is torch's.
    Returns a dict: feat, grads {name}, after {name} (state after the step), feat_eval, dinput
    (NHWC), relu (the ReLU outputs, NHWC, concatenated)."""
    m = torch_backbone(arch).double()
    sd = unflatten(manifest, init_flat)
    sd = {k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    relus, pool = _ReLUs(), _MaxPool()
    m.relu, m.maxpool = relus, pool
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        for blk in layer:
            blk.relu = relus
    if relu_out is not None:
        # shapes of every ReLU output, from a first (recording) pass
        with torch.no_grad():
            m.train()
            m(nchw(x))
        shapes = [tuple(t.shape) for t in relus.outputs]
        relus.outputs, relus.masks, off = [], [], 0
        for (b, c, h, w) in shapes:
            n = b * c * h * w
            relus.masks.append(nchw(relu_out[off:off + n].reshape(b, h, w, c)) > 0)
            off += n
        assert off == relu_out.size
        pool.argmax = nchw(argmax.astype(np.int64)).long()
        m.load_state_dict(sd, strict=False)  # undo the recording pass's running-stat update
    m.train()
    xt = nchw(x).requires_grad_()
    feat = m(xt)
    (feat * torch.from_numpy(dfeat).double()).sum().backward()
    out = {"feat": feat.detach().numpy(), "dinput": nhwc(xt.grad),
           "grads": {n: p.grad.numpy() for n, p in m.named_parameters()},
           "after": {n: t.detach().double().numpy() for n, t in m.state_dict().items()},
           "relu": np.concatenate([nhwc(t).ravel() for t in relus.outputs])}
    relus.masks, relus.outputs, pool.argmax = None, [], None
    m.eval()
    with torch.no_grad():
        out["feat_eval"] = m(nchw(x)).numpy()
    return out
