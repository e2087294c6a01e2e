"""Actor-critics that PPO (``rl.ppo``) trains: one interface over dict observations, two policies behind it.

PPO only ever calls, on an observation dict from the env (``{"tokens", "task"}``, plus ``"image"`` from
:class:`~rla_pipeline.rl.decoded_env.DecodedImageEnv`):

- ``encode_obs(obs) -> dict``: what the rollout buffer stores for a step (under no_grad). The image policy with a
  frozen backbone stores its backbone features here, so the update epochs never rerun the ResNet;
- ``dist_value(stored) -> (Normal over (B, H*A), V (B,))`` and ``value(stored)``;
- ``action_mean(obs) -> (B, H, A)`` (deterministic evaluation), ``log_std``, ``chunk``, ``action_dim``;
- ``actor``: the plain policy module that is saved and run in the simulator afterwards.

:class:`TokenActorCritic` wraps a :class:`~rla_pipeline.models.policy.TokenPolicy` (its own actor, log-std and
critic). :class:`ImageActorCritic` wraps the image BC-ResNet policy of Table 2: its mean action is the BC-ResNet's
output, unchanged; PPO adds a state-independent log-std and a value head. The value head reads the BC-ResNet's
features DETACHED, so critic gradients never reach (and never disturb) the behaviour-cloned actor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from rla_pipeline.models.policy import BCResNetPolicy, TokenPolicy
from rla_pipeline.utils.config import from_dict

TRAINABLE = ("all", "head")


class TokenActorCritic(nn.Module):
    """A TokenPolicy behind the dict-observation interface (the policy already has actor, log-std and critic)."""

    def __init__(self, policy: TokenPolicy):
        super().__init__()
        self.actor = policy
        self.chunk, self.action_dim = policy.config.chunk, policy.config.action_dim

    @property
    def log_std(self) -> torch.Tensor:
        return self.actor.log_std

    def encode_obs(self, obs: dict) -> dict:
        return {"tokens": obs["tokens"], "task": obs["task"]}

    def dist_value(self, x: dict):
        return self.actor.distribution(x["tokens"], task=x["task"]), self.actor.value(x["tokens"], task=x["task"])

    def value(self, x: dict) -> torch.Tensor:
        return self.actor.value(x["tokens"], task=x["task"])

    def action_mean(self, obs: dict) -> torch.Tensor:
        return self.actor.action_mean(obs["tokens"], task=obs["task"])


@dataclass
class ImageActorCriticConfig:
    """``rl.bc_resnet``: what PPO adds to / trains of the BC-ResNet policy.

    trainable: "all" fine-tunes every weight of the BC-ResNet in imagination (backbone included, what the paper's
        PPO does); "head" keeps the backbone and task embedding as behaviour cloning left them (trained on rendered
        frames) and trains the MLP trunk + action head only: the features of real frames stay BC's, and the
        update epochs reuse the rollout's features (about 3x cheaper per update on CPU).
    init_log_std: exploration noise of the Gaussian around the BC action, in action units (exp(-1.5) = 0.22).
    value_hidden: width of the value MLP on the (detached) BC-ResNet features.
    """

    trainable: str = "head"
    init_log_std: float = -1.5
    min_log_std: float = -5.0
    max_log_std: float = 1.0
    value_hidden: int = 128

    @classmethod
    def from_dict(cls, d: "dict | ImageActorCriticConfig | None") -> "ImageActorCriticConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="rl.bc_resnet")

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"rl.bc_resnet.trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.value_hidden < 1:
            raise ValueError("rl.bc_resnet.value_hidden must be >= 1")


class ImageActorCritic(nn.Module):
    """BC-ResNet (image -> action chunk mean) + learnable log-std + value MLP on its detached features.

    Observations carry ``image``: uint8 (B, H, W, 3), exactly what the policy gets from the simulator's camera.
    """

    def __init__(self, policy: BCResNetPolicy, cfg: ImageActorCriticConfig | None = None):
        super().__init__()
        cfg = cfg or ImageActorCriticConfig()
        if policy.config.proprio_dim:
            raise ValueError("the world model predicts images only: a BC-ResNet with proprio input cannot act in it")
        self.cfg, self.actor = cfg, policy
        self.chunk, self.action_dim = policy.config.chunk, policy.config.action_dim
        self.log_std = nn.Parameter(torch.full((self.chunk * self.action_dim,), float(cfg.init_log_std)))
        self.critic = nn.Sequential(nn.LayerNorm(policy.feature_dim), nn.Linear(policy.feature_dim, cfg.value_hidden),
                                    nn.GELU(), nn.Linear(cfg.value_hidden, cfg.value_hidden), nn.GELU(),
                                    nn.Linear(cfg.value_hidden, 1))
        if cfg.trainable == "head":
            for p in list(policy.backbone.parameters()) + list(
                    policy.task_embed.parameters() if policy.task_embed is not None else []):
                p.requires_grad_(False)
        self.train(self.training)  # BatchNorm on BC's statistics from the start (see train())

    def train(self, mode: bool = True):
        super().train(mode)
        # BatchNorm always uses BC's running statistics: in train mode it would normalise with (and accumulate)
        # statistics of DECODED images, which the simulator's rendered frames do not share; it would also make the
        # rollout's log-probs (batch of num_envs) differ from the update's (minibatch) for the same weights.
        self.actor.backbone.eval()
        return self

    def _features(self, obs: dict) -> torch.Tensor:
        return self.actor.features(obs["image"], task=obs.get("task"))

    def encode_obs(self, obs: dict) -> dict:
        if self.cfg.trainable == "head":
            with torch.no_grad():
                return {"features": self._features(obs)}
        return {"image": obs["image"], "task": obs["task"]}

    def _feats(self, x: dict) -> torch.Tensor:
        return x["features"] if "features" in x else self._features(x)

    def _dist(self, feats: torch.Tensor) -> torch.distributions.Normal:
        mean = self.actor.action_from_features(feats).flatten(1)
        std = self.log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std).exp().expand_as(mean)
        return torch.distributions.Normal(mean, std)

    def dist_value(self, x: dict):
        feats = self._feats(x)
        return self._dist(feats), self.critic(feats.detach()).squeeze(-1)

    def value(self, x: dict) -> torch.Tensor:
        return self.critic(self._feats(x).detach()).squeeze(-1)

    def action_mean(self, obs: dict) -> torch.Tensor:
        return self.actor(obs["image"], task=obs.get("task"))


def as_actor_critic(policy) -> nn.Module:
    """A TokenPolicy (or any object with its action_mean/distribution/value/config) -> :class:`TokenActorCritic`; a
    BC-ResNet -> :class:`ImageActorCritic` with a fresh log-std and critic (for evaluation; to train, wrap it with
    your :class:`ImageActorCriticConfig`); an actor-critic is returned as is."""
    if hasattr(policy, "encode_obs"):
        return policy
    if isinstance(policy, BCResNetPolicy):  # "all": freezes nothing, the wrapper leaves the policy as it is
        return ImageActorCritic(policy, ImageActorCriticConfig(trainable="all"))
    if isinstance(policy, TokenPolicy) or hasattr(policy, "action_mean"):  # TokenPolicy or one shaped like it
        return TokenActorCritic(policy)
    raise TypeError(f"PPO cannot train a {type(policy).__name__}: pass a TokenPolicy or an actor-critic")
