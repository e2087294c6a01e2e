"""Policies: BC-ResNet (image -> action chunk, optional linear RLA latent head) and TokenPolicy (DINO tokens ->
Gaussian action chunk + value, for PPO inside the world model).

Both are multi-task: one network for every task of the run, told which task by an index embedding (``num_tasks``;
0 = no task input). The paper trains one policy per task; one shared network is cheaper at the small scale and the
tables are still per task (see docs/rl.md).

Action chunks are (B, chunk, A) in the env's action units (ManiSkill pd_ee_delta_pos: [-1, 1] per dim).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from rla_pipeline.models.registry import register_model
from rla_pipeline.utils.images import IMAGENET_MEAN, IMAGENET_STD
from rla_pipeline.utils.config import from_dict



def task_index_of(config, task: str) -> int | None:
    """Index of ``task`` for a multi-task policy config (None when the policy takes no task input)."""
    if not config.num_tasks:
        return None
    if task not in config.task_names:
        raise KeyError(f"policy was trained on tasks {config.task_names}, not {task!r}")
    return config.task_names.index(task)


def _check_positive(cfg, names: tuple[str, ...]) -> None:
    for name in names:
        if int(getattr(cfg, name)) <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be > 0, got {getattr(cfg, name)}")


@dataclass
class BCResNetConfig:
    """BC-ResNet: timm ResNet (random init) over one RGB frame, MLP head -> action chunk."""

    backbone: str = "resnet10t"  # any timm ResNet name; created with pretrained=False (no hub access)
    image_size: int = 96  # frames are resized to image_size x image_size before the backbone
    action_dim: int = 4  # A (Panda pd_ee_delta_pos: 3 position deltas + gripper)
    chunk: int = 8  # H: actions predicted per call
    proprio_dim: int = 0  # P: 0 = no proprio input
    num_tasks: int = 0  # > 0: a learned task embedding is concatenated to the image features
    task_names: list[str] = field(default_factory=list)  # task index i <-> task_names[i] (ManiSkill ids)
    hidden: int = 256  # width of the MLP head
    latent_tokens: int = 0  # K of the RLA latent z predicted by ``latent_head`` (0 = no latent head)
    latent_dim: int = 0  # d of z

    @classmethod
    def from_dict(cls, d: dict | None) -> "BCResNetConfig":
        return from_dict(cls, d, where="BCResNetConfig")

    def __post_init__(self) -> None:
        _check_positive(self, ("image_size", "action_dim", "chunk", "hidden"))
        if (self.latent_tokens > 0) != (self.latent_dim > 0):
            raise ValueError("BCResNetConfig: latent_tokens and latent_dim must both be > 0 or both 0")


@register_model
class BCResNetPolicy(nn.Module):
    """Image (+ proprio, + task) -> action chunk. ``latent_head`` is ONE linear layer on ``features()`` -> z (B,K,d)."""

    config_class = BCResNetConfig

    def __init__(self, config: BCResNetConfig | dict):
        super().__init__()
        import timm

        if isinstance(config, dict):
            config = BCResNetConfig.from_dict(config)
        self.config = c = config
        self.backbone = timm.create_model(c.backbone, pretrained=False, num_classes=0)
        feat = self.backbone.num_features
        self.task_embed = nn.Embedding(c.num_tasks, 32) if c.num_tasks > 0 else None
        self.proprio_in = nn.Linear(c.proprio_dim, 64) if c.proprio_dim > 0 else None
        self.feature_dim = feat + (32 if self.task_embed is not None else 0) + (64 if self.proprio_in is not None else 0)
        self.trunk = nn.Sequential(nn.Linear(self.feature_dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.hidden), nn.GELU())
        self.action_head = nn.Linear(c.hidden, c.chunk * c.action_dim)
        self.latent_head = (
            nn.Linear(self.feature_dim, c.latent_tokens * c.latent_dim) if c.latent_tokens > 0 else None
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,H,W,3) or float (B,3,H,W) in [0,1] -> normalised float (B,3,S,S), S = image_size."""
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float() / 255.0
        s = self.config.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.pixel_mean) / self.pixel_std

    def features(self, images: torch.Tensor, proprio: torch.Tensor | None = None,
                 task: torch.Tensor | None = None) -> torch.Tensor:
        """Policy features (B, feature_dim): backbone pool (+ task embedding) (+ proprio embedding)."""
        parts = [self.backbone(self.preprocess(images))]  # (B, F)
        if self.task_embed is not None:
            if task is None:
                raise ValueError("BCResNetPolicy has num_tasks > 0: pass task (B,) long")
            parts.append(self.task_embed(task))
        if self.proprio_in is not None:
            if proprio is None:
                raise ValueError("BCResNetPolicy has proprio_dim > 0: pass proprio (B, P)")
            parts.append(F.gelu(self.proprio_in(proprio)))
        return torch.cat(parts, dim=-1)

    def action_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) -> action chunk (B, H, A)."""
        c = self.config
        return self.action_head(self.trunk(feats)).view(-1, c.chunk, c.action_dim)

    def latent_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) -> predicted RLA latent z (B, K, d)."""
        if self.latent_head is None:
            raise ValueError("this BCResNetPolicy has no latent head (latent_tokens = 0)")
        c = self.config
        return self.latent_head(feats).view(-1, c.latent_tokens, c.latent_dim)

    def forward(self, images: torch.Tensor, proprio: torch.Tensor | None = None,
                task: torch.Tensor | None = None) -> torch.Tensor:
        """images uint8 (B,H,W,3) -> action chunk (B, H, A)."""
        return self.action_from_features(self.features(images, proprio, task))

    @torch.no_grad()
    def act(self, images: torch.Tensor, proprio: torch.Tensor | None = None,
            task: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic action chunk for evaluation (B, H, A)."""
        return self.forward(images, proprio, task)


@dataclass
class TokenPolicyConfig:
    """Actor-critic over DINO patch tokens: per-token projection to ``token_proj`` dims keeps the spatial layout
    (flattened N * token_proj), then an MLP trunk; the actor outputs the mean of a diagonal Gaussian over the whole
    chunk with a learnable, state-independent log-std; the critic (separate trunk) outputs V(s)."""

    num_tokens: int = 16  # N
    token_dim: int = 384  # D
    action_dim: int = 4  # A
    chunk: int = 8  # H
    proprio_dim: int = 0  # P (0 inside the world model: it predicts tokens only)
    num_tasks: int = 0
    task_names: list[str] = field(default_factory=list)  # task index i <-> task_names[i]
    token_proj: int = 16  # per-token projection width before flattening
    hidden: int = 256
    init_log_std: float = -1.5  # exp(-1.5) = 0.22: exploration noise for PPO, in action units
    min_log_std: float = -5.0
    max_log_std: float = 1.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "TokenPolicyConfig":
        return from_dict(cls, d, where="TokenPolicyConfig")

    def __post_init__(self) -> None:
        _check_positive(self, ("num_tokens", "token_dim", "action_dim", "chunk", "token_proj", "hidden"))


class _TokenTrunk(nn.Module):
    def __init__(self, c: TokenPolicyConfig):
        super().__init__()
        self.norm = nn.LayerNorm(c.token_dim)  # DINO token scales vary per dim; normalise each token first
        self.proj = nn.Linear(c.token_dim, c.token_proj)
        self.task_embed = nn.Embedding(c.num_tasks, 32) if c.num_tasks > 0 else None
        extra = (32 if c.num_tasks > 0 else 0) + c.proprio_dim
        self.mlp = nn.Sequential(
            nn.Linear(c.num_tokens * c.token_proj + extra, c.hidden), nn.GELU(),
            nn.Linear(c.hidden, c.hidden), nn.GELU(),
        )

    def forward(self, tokens, proprio, task):
        x = self.proj(self.norm(tokens.float())).flatten(1)  # (B, N*token_proj)
        parts = [x]
        if self.task_embed is not None:
            if task is None:
                raise ValueError("TokenPolicy has num_tasks > 0: pass task (B,) long")
            parts.append(self.task_embed(task))
        if proprio is not None and proprio.shape[-1] > 0:
            parts.append(proprio.float())
        return self.mlp(torch.cat(parts, dim=-1))  # (B, hidden)


@register_model
class TokenPolicy(nn.Module):
    """DINO tokens (B,N,D) [+ proprio (B,P)] [+ task (B,)] -> Gaussian over the action chunk (B,H,A) and V (B,)."""

    config_class = TokenPolicyConfig

    def __init__(self, config: TokenPolicyConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = TokenPolicyConfig.from_dict(config)
        self.config = c = config
        self.actor = _TokenTrunk(c)
        self.mean_head = nn.Linear(c.hidden, c.chunk * c.action_dim)
        self.log_std = nn.Parameter(torch.full((c.chunk * c.action_dim,), float(c.init_log_std)))
        self.critic = _TokenTrunk(c)
        self.value_head = nn.Linear(c.hidden, 1)

    def _check(self, tokens, proprio):
        c = self.config
        if tokens.shape[-2:] != (c.num_tokens, c.token_dim):
            raise ValueError(f"TokenPolicy expects tokens (B,{c.num_tokens},{c.token_dim}), got {tuple(tokens.shape)}")
        if c.proprio_dim > 0 and (proprio is None or proprio.shape[-1] != c.proprio_dim):
            raise ValueError(f"TokenPolicy expects proprio (B,{c.proprio_dim})")
        return proprio if c.proprio_dim > 0 else None

    def action_mean(self, tokens, proprio=None, task=None) -> torch.Tensor:
        """(B,N,D) -> mean action chunk (B, H, A)."""
        c = self.config
        proprio = self._check(tokens, proprio)
        return self.mean_head(self.actor(tokens, proprio, task)).view(-1, c.chunk, c.action_dim)

    def distribution(self, tokens, proprio=None, task=None) -> torch.distributions.Normal:
        """Diagonal Gaussian over the flattened chunk (B, H*A)."""
        mean = self.action_mean(tokens, proprio, task).flatten(1)
        c = self.config
        std = self.log_std.clamp(c.min_log_std, c.max_log_std).exp().expand_as(mean)
        return torch.distributions.Normal(mean, std)

    def value(self, tokens, proprio=None, task=None) -> torch.Tensor:
        """(B,N,D) -> V(s) (B,)."""
        proprio = self._check(tokens, proprio)
        return self.value_head(self.critic(tokens, proprio, task)).squeeze(-1)

    def forward(self, tokens, proprio=None, task=None) -> torch.Tensor:
        return self.action_mean(tokens, proprio, task)

    @torch.no_grad()
    def act(self, tokens, proprio=None, task=None) -> torch.Tensor:
        """Deterministic (mean) action chunk for evaluation (B, H, A)."""
        return self.action_mean(tokens, proprio, task)
