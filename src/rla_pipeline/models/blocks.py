"""Pre-norm transformer blocks shared by the RLA autoencoder and the world models.

Shapes: B batch, T tokens in the stream, S tokens in the context (cross-attention), W width, C conditioning dims.
Conditioning (adaLN / FiLM): a vector c (B, C) gives per-block shift/scale/gate for each sub-layer; the modulation
layer is zero-initialised so a conditioned block starts as the plain block with its residual branches gated to zero.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos embedding of float positions (P,) -> (P, dim)."""
    half = dim // 2
    # built on the positions' device: a CPU tensor here would meet a GPU flow time t in the product below
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device)
                      / max(half, 1))
    angles = positions.float()[:, None] * freqs[None]  # (P, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sincos_pos_embed(num_tokens: int, dim: int) -> torch.Tensor:
    """Fixed position embedding (num_tokens, dim): 2-D over a square patch grid, else 1-D."""
    side = int(round(math.sqrt(num_tokens)))
    if side * side == num_tokens and dim >= 4:
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        return torch.cat([sincos_1d(ys.flatten(), dim // 2), sincos_1d(xs.flatten(), dim - dim // 2)], dim=-1)
    return sincos_1d(torch.arange(num_tokens), dim)


class PositionEmbedding(nn.Module):
    """Adds a position embedding over T tokens: fixed sin-cos plus (optionally) a learned table (init 0)."""

    def __init__(self, num_tokens: int, width: int, learned: bool = True):
        super().__init__()
        self.register_buffer("fixed", sincos_pos_embed(num_tokens, width), persistent=False)
        self.learned = nn.Parameter(torch.zeros(num_tokens, width)) if learned else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, W) -> (B, T, W)
        pos = self.fixed if self.learned is None else self.fixed + self.learned
        return x + pos.to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Flow time t in [0, 1] (B,) -> (B, dim) sin-cos features (t scaled by 1000 like diffusion models)."""
    return sincos_1d(t * 1000.0, dim)


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, else cross-attention to it."""

    def __init__(self, width: int, heads: int, context_width: int | None = None):
        super().__init__()
        assert width % heads == 0, f"width {width} not divisible by heads {heads}"
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width or width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, T, W = x.shape
        ctx = x if context is None else context  # (B, S, Wc)
        q = self.q(x).view(B, T, self.heads, W // self.heads).transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, W))


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float = 4.0, out: int | None = None):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, out or width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: [self-attention] -> [cross-attention to context] -> MLP, each with a residual.

    ``cross=True`` adds the cross-attention sub-layer (context (B, S, context_width) must then be given).
    ``cond_dim`` enables adaLN: every sub-layer's LayerNorm output is shifted/scaled and its branch gated by c.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float = 4.0,
        cross: bool = False,
        context_width: int | None = None,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.cond = cond_dim is not None
        affine = not self.cond  # adaLN supplies its own scale/shift
        self.norm1 = nn.LayerNorm(width, elementwise_affine=affine)
        self.attn = Attention(width, heads)
        self.cross = cross
        if cross:
            self.norm_x = nn.LayerNorm(width, elementwise_affine=affine)
            self.norm_ctx = nn.LayerNorm(context_width or width)
            self.cross_attn = Attention(width, heads, context_width=context_width or width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=affine)
        self.mlp = MLP(width, mlp_ratio)
        self.n_sub = 3 if cross else 2
        if self.cond:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 3 * self.n_sub * width))
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, W), context (B, S, Wc) | None, c (B, C) | None -> (B, T, W)."""
        if not self.cond:
            x = x + self.attn(self.norm1(x))
            if self.cross:
                x = x + self.cross_attn(self.norm_x(x), self.norm_ctx(context))
            return x + self.mlp(self.norm2(x))
        # adaLN: shift/scale of each sub-layer's normalised input and a gate on its branch, all from c. The gate is
        # 1 + (zero-initialised output), so an untrained conditioned block behaves like an unconditioned one.
        mods = self.ada(c)[:, None].chunk(3 * self.n_sub, dim=-1)  # each (B, 1, W)
        shift, scale, gate = mods[0:3]
        x = x + (1 + gate) * self.attn(self.norm1(x) * (1 + scale) + shift)
        if self.cross:
            shift, scale, gate = mods[3:6]
            x = x + (1 + gate) * self.cross_attn(self.norm_x(x) * (1 + scale) + shift, self.norm_ctx(context))
        shift, scale, gate = mods[-3:]
        return x + (1 + gate) * self.mlp(self.norm2(x) * (1 + scale) + shift)


class TokenReadout(nn.Module):
    """Transformer stream (B, T, W) -> tokens (B, T, D), never confined to a W-dim subspace of the token space.

    A plain ``Linear(W, D)`` readout can only output vectors in a W-dim subspace of the D-dim token space; with
    W = 128 < D = 384 that removes two thirds of every token (for a flow model: the noise it must remove there). This
    readout is what every model of this package uses for its token outputs, so all get the same token capacity:

        out = Linear(D', D)(GELU(Linear(W, D')(LN(h))))                              D' = max(W, D)
            [ + Linear(W, D)(LN(h)) * x_in    only with ``gate_input=True`` ]

    - the first term is a hidden layer as wide as the token (nonlinear, so its outputs span all D dims); it reads
      the transformer's stream ``h`` and nothing else;
    - ``gate_input=True`` adds a per-dim gate, computed from the stream, on the model's own token input ``x_in``.
      Only the flow transformers use it (``x_in`` is the noisy x_t, whose velocity outside the data's span is
      x_t / t). State predictors (the RLA decoder, the deterministic world model) build it without the gate: a gate
      on s_t would be a learned copy path, so a "no skip" decoder or a "direct" predictor would not be what its
      name says. Their residual variants add s_t explicitly, outside the readout.
    Both output layers start at zero (the paper's zero-initialised output layer): an untrained model outputs 0.
    """

    def __init__(self, width: int, out_dim: int, gate_input: bool = False):
        super().__init__()
        hidden = max(width, out_dim)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.gate = nn.Linear(width, out_dim) if gate_input else None
        for layer in (self.fc2, self.gate):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, x_in: torch.Tensor | None = None) -> torch.Tensor:
        """h (B, T, W), x_in (B, T, D) (exactly when built with ``gate_input``) -> (B, T, D)."""
        if (self.gate is None) != (x_in is None):
            raise ValueError("TokenReadout: pass x_in exactly when the readout was built with gate_input=True")
        h = self.norm(h)
        out = self.fc2(F.gelu(self.fc1(h)))
        if self.gate is not None:
            out = out + self.gate(h) * x_in
        return out
