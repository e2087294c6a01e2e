"""The Residual Latent Action (RLA) autoencoder.

encode(s_t, s_{t+h}) -> z: a transformer over the residual s_{t+h} - s_t (N tokens) plus K learned query tokens
appended to the sequence; the K query outputs, projected to d dims, are the latent action z (B, K, d).
decode(s_t, z) -> s_{t+h}: a transformer over [z tokens ; s_t tokens] whose N state outputs predict s_{t+h}
directly (zero-initialised output layer, no skip connection, as in the paper). The output layer is the package's
:class:`~rla_pipeline.models.blocks.TokenReadout` without its input gate (a token-wide hidden layer on the
transformer's outputs only), so a decoder narrower than the token still reaches every token dim, and s_t reaches
the prediction only as the decoder transformer's input: there is no path that copies it. ``decoder_skip: true``
(an ablation, not the paper) adds s_t explicitly: the prediction is s_t + the same readout.

Token normalisation: random-init (and real) DINO tokens have per-dim scales far from 1. The model keeps a per-dim
mean/std (:class:`~rla_pipeline.models.normalise.Normaliser`, set from training data with ``set_token_stats``); both
networks work on normalised tokens and the loss (L1 + MSE) is computed on normalised tokens. ``decode`` returns
raw-scale tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rla_pipeline.models.blocks import Block, PositionEmbedding, TokenReadout
from rla_pipeline.models.normalise import Normaliser, TokenNormalised, token_stats  # noqa: F401 (token_stats: re-exported)
from rla_pipeline.models.registry import register_model
from rla_pipeline.utils.config import from_dict


@dataclass
class RLAConfig:
    """Shape of the RLA autoencoder (small CPU default; paper: width 1024, 12+12 blocks, 16 heads, 32 x 64)."""

    num_tokens: int = 16  # N: DINO patch tokens per frame
    token_dim: int = 384  # D: DINO token dims
    width: int = 128  # transformer width
    enc_depth: int = 2  # encoder blocks
    dec_depth: int = 2  # decoder blocks
    heads: int = 4
    mlp_ratio: float = 4.0
    latent_tokens: int = 8  # K
    latent_dim: int = 8  # d
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    # False (the paper): the decoder's outputs predict s_{t+h} with no path copying s_t. True (NOT the paper; an
    # ablation): s_t + delta, delta from the same readout.
    decoder_skip: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "RLAConfig":
        return from_dict(cls, d, where="RLAConfig")

    def __post_init__(self) -> None:
        for name in ("num_tokens", "token_dim", "width", "enc_depth", "dec_depth", "heads", "latent_tokens", "latent_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"RLAConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"RLAConfig.width {self.width} must be divisible by heads {self.heads}")


@register_model
class ResidualLatentActionAutoencoder(TokenNormalised, nn.Module):
    config_class = RLAConfig

    def __init__(self, config: RLAConfig):
        super().__init__()
        if isinstance(config, dict):
            config = RLAConfig.from_dict(config)
        self.config = c = config
        N, D, W, K = c.num_tokens, c.token_dim, c.width, c.latent_tokens
        self.tokens = Normaliser(D)
        # encoder
        self.enc_in = nn.Linear(D, W)
        self.enc_pos = PositionEmbedding(N, W)
        self.queries = nn.Parameter(torch.randn(K, W) * 0.02)
        self.enc_blocks = nn.ModuleList(Block(W, c.heads, c.mlp_ratio) for _ in range(c.enc_depth))
        self.enc_norm = nn.LayerNorm(W)
        self.enc_out = nn.Linear(W, c.latent_dim)
        # decoder
        self.dec_z_in = nn.Linear(c.latent_dim, W)
        self.dec_z_pos = nn.Parameter(torch.randn(K, W) * 0.02)
        self.dec_s_in = nn.Linear(D, W)
        self.dec_pos = PositionEmbedding(N, W)
        self.dec_blocks = nn.ModuleList(Block(W, c.heads, c.mlp_ratio) for _ in range(c.dec_depth))
        # zero-initialised: an untrained decoder outputs the mean token (no skip) or s_t (skip); no gate on s_t
        self.dec_out = TokenReadout(W, D, gate_input=False)

    # --- normalisation -------------------------------------------------------------------------------------
    def set_token_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-dim token statistics (D,) from the training set."""
        self.tokens.set(mean, std)

    # --- model ---------------------------------------------------------------------------------------------
    def encode_normalised(self, s_t_n: torch.Tensor, s_th_n: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (B, N, D) x2 -> z (B, K, d)."""
        B = s_t_n.shape[0]
        x = self.enc_pos(self.enc_in(s_th_n - s_t_n))  # (B, N, W)
        x = torch.cat([x, self.queries.expand(B, -1, -1)], dim=1)  # (B, N+K, W)
        for blk in self.enc_blocks:
            x = blk(x)
        return self.enc_out(self.enc_norm(x[:, -self.config.latent_tokens :]))  # (B, K, d)

    def decode_normalised(self, s_t_n: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Normalised s_t (B, N, D), z (B, K, d) -> normalised s_{t+h} prediction (B, N, D)."""
        K = self.config.latent_tokens
        zt = self.dec_z_in(z) + self.dec_z_pos  # (B, K, W)
        st = self.dec_pos(self.dec_s_in(s_t_n))  # (B, N, W)
        x = torch.cat([zt, st], dim=1)  # (B, K+N, W)
        for blk in self.dec_blocks:
            x = blk(x)
        out = self.dec_out(x[:, K:])  # (B, N, D): from the transformer's state outputs only
        return s_t_n + out if self.config.decoder_skip else out

    def encode(self, s_t: torch.Tensor, s_th: torch.Tensor) -> torch.Tensor:
        """Raw tokens s_t, s_{t+h} (B, N, D) -> latent action z (B, K, d)."""
        return self.encode_normalised(self.normalise(s_t), self.normalise(s_th))

    def decode(self, s_t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Raw s_t (B, N, D), z (B, K, d) -> raw predicted s_{t+h} (B, N, D)."""
        return self.denormalise(self.decode_normalised(self.normalise(s_t), z))

    def forward(self, s_t: torch.Tensor, s_th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (predicted s_{t+h} raw (B, N, D), z (B, K, d))."""
        z = self.encode(s_t, s_th)
        return self.decode(s_t, z), z

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 + MSE between predicted and true s_{t+h}, on normalised tokens -> (loss, metrics)."""
        s_t, s_th = batch["s_t"].float(), batch["s_th"].float()
        return self.loss_from_prediction(self(s_t, s_th)[0], s_t, s_th)

    def loss_from_prediction(self, pred: torch.Tensor, s_t: torch.Tensor, s_th: torch.Tensor):
        """Raw prediction/targets (B, N, D) -> (L1 + MSE on normalised tokens, metrics)."""
        pred, s_t_n, s_th_n = self.normalise(pred), self.normalise(s_t), self.normalise(s_th)
        l1 = F.l1_loss(pred, s_th_n)
        mse = F.mse_loss(pred, s_th_n)
        loss = self.config.l1_weight * l1 + self.config.mse_weight * mse
        with torch.no_grad():
            copy_l1 = F.l1_loss(s_t_n, s_th_n)
        # detached tensors, not floats: .item() here would sync a GPU every step (the trainer converts when it logs)
        return loss, {"loss": loss.detach(), "l1": l1.detach(), "mse": mse.detach(), "copy_l1": copy_l1}


def rla_loss(model: ResidualLatentActionAutoencoder, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Trainer loss_fn. Goes through ``model(...)`` (not ``.loss``) so a DDP wrapper syncs the gradients."""
    m = getattr(model, "module", model)
    s_t, s_th = batch["s_t"].float(), batch["s_th"].float()
    pred, _ = model(s_t, s_th)
    return m.loss_from_prediction(pred, s_t, s_th)

