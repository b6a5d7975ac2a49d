"""dinov2_ref.py: a PyTorch DINOv2 ViT written from the architecture (facebookresearch/dinov2's
vision_transformer.py semantics), the reference the C forward (lib/models/dinov2.c) is tested
against. Module attribute names follow the original checkpoints, so `state_dict()` has the
original key names; `to_hf_names` / `to_chunked_names` give the other namings.

Semantics reproduced on purpose:
- prepare tokens: patch conv → [cls, patches] + interpolated pos_embed, then register tokens
  inserted after cls (no position embedding on registers);
- interpolate_pos_encoding: returns pos_embed unchanged when the patch count equals the stored
  M² and the image is square (in pixels); otherwise bicubic F.interpolate of the (M, M) grid with
  scale_factor ((gh + 0.1)/M, (gw + 0.1)/M), antialias False (DINOv2 calls the image dims "w, h"
  but they are NCHW dims 2 and 3, i.e. rows then columns);
- pre-norm blocks, LayerNorm eps 1e-6, LayerScale, Mlp (GELU, exact erf) or SwiGLU FFN;
- output: final norm, CLS token, F.normalize.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, swiglu):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLUFFN(dim, hidden) if swiglu else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):  # (B, 3, H, W) -> (B, gh*gw, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    def __init__(self, dim=64, depth=2, patch=14, pos_grid=4, n_reg=0, hidden=None,
                 swiglu=False):
        super().__init__()
        self.patch = patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, n_reg, dim)) if n_reg else None
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference
        hidden = hidden or 4 * dim
        self.blocks = nn.ModuleList(Block(dim, dim // 64, hidden, swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, x, H, W):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and H == W:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, 0], pos[:, 1:]
        dim = x.shape[-1]
        gh, gw = H // self.patch, W // self.patch
        M = int(math.sqrt(N))
        assert M * M == N
        sh, sw = float(gh + 0.1) / M, float(gw + 0.1) / M
        patch_pos = F.interpolate(patch_pos.reshape(1, M, M, dim).permute(0, 3, 1, 2),
                                  scale_factor=(sh, sw), mode="bicubic", antialias=False)
        assert (gh, gw) == tuple(patch_pos.shape[-2:])
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1).to(x.dtype)

    def forward(self, x):  # x (B, 3, H, W) -> (B, D), L2-normalised CLS
        B, _, H, W = x.shape
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(B, -1, -1), t), dim=1)
        t = t + self.interpolate_pos_encoding(t, H, W)
        if self.register_tokens is not None:
            t = torch.cat((t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]), dim=1)
        for blk in self.blocks:
            t = blk(t)
        return F.normalize(self.norm(t)[:, 0], dim=-1)


def randomize(model, gen=None):
    """Fresh random weights of a scale that makes every part of the network matter (LayerScale
    gammas near 1 instead of DINOv2's 1e-5, position embeddings as large as patch embeddings)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith((".gamma",)):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2 and name.startswith(("blocks", "patch_embed")):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:  # cls_token, pos_embed, register_tokens, mask_token
                p.copy_(torch.randn(p.shape, generator=gen))
    return model


def to_hf_names(sd):
    """Original DINOv2 key names -> Hugging Face facebook/dinov2-* names (qkv split in three)."""
    out = {}
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "register_tokens": "embeddings.register_tokens", "mask_token": "embeddings.mask_token",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    sub = {"norm1.": "norm1.", "norm2.": "norm2.", "attn.proj.": "attention.output.dense.",
           "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
           "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.", "mlp.w12.": "mlp.weights_in.",
           "mlp.w3.": "mlp.weights_out."}
    for k, v in sd.items():
        if k in top:
            out[top[k]] = v
            continue
        assert k.startswith("blocks."), k
        _, i, rest = k.split(".", 2)
        pre = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[pre + f"attention.attention.{name}.{kind}"] = part.clone()
            continue
        for a, b in sub.items():
            if rest.startswith(a):
                out[pre + b + rest[len(a):]] = v
                break
        else:
            raise KeyError(k)
    return out


def to_chunked_names(sd, chunks):
    """Original names -> BlockChunk names "blocks.<chunk>.<i>." (global block index i)."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    per = -(-depth // chunks)
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            out[f"blocks.{int(i) // per}.{i}.{rest}"] = v
        else:
            out[k] = v
    return out
