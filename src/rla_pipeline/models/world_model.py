"""World models over DINO tokens: RLA-WM (flow on the residual latent action z + frozen RLA decoder) and two baselines.

Every model here implements
    predict_next(s_t (B,N,D), actions (B,H,A), action_mask (B,H), generator=None) -> s_{t+h} (B,N,D)   raw tokens
    rollout(s_0 (B,N,D), action_chunks [(B,H,A)], masks [(B,H)], generator=None) -> [(B,N,D)] one per chunk
    forward(s_t, actions, action_mask, s_th) -> (training loss, metrics)   (through forward so DDP syncs gradients)
    loss(batch) -> (loss, metrics); ``world_model_loss(model, batch)`` is the trainer's loss_fn.

- ``RLAWorldModel``: action token = MLP (to 64) per action step then a GRU (to width) over the masked chunk;
  a conditioning transformer over s_t tokens, adaLN-modulated by the action token; a flow transformer (cross-attention
  from the K z-tokens to the conditioning tokens, adaLN by flow time + action token) predicts the velocity on z / z_scale;
  Euler sampling then s_{t+h} = f_dec(s_t, z) with the FROZEN RLA decoder.
  Saving: the frozen RLA is a submodule (``requires_grad=False``, always in eval mode) whose weights are part of the
  world model's state_dict and whose config is nested in ``WorldModelConfig.rla``. The saved file is therefore
  self-contained and immutable: it records exactly the decoder it was trained with (a snapshot, never trained further).
- ``DeterministicWorldModel``: DINO-WM style ViT predictor: [s_t token ; action embedding] concatenated per patch,
  self-attention blocks, MSE loss. Direct (default, ``predict_residual: false``): s_{t+h} is read out of the
  transformer's outputs only, no path copies s_t; residual (``predict_residual: true``): s_t + the same readout.
- ``AbsoluteFlowWorldModel``: the same conditioning transformer and action token as RLA-WM, but flow matching on the
  absolute (normalised) next-state tokens (B, N, D) instead of on z.
Tokens and actions are normalised with per-dim dataset statistics (``models.normalise.Normaliser``). Every token
output goes through ``blocks.TokenReadout`` (see there), so no model is confined to a width-dim subspace of the token;
only the flow transformers gate their input x_t in it, the state predictors have no gate on s_t.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from rla_pipeline.models.blocks import Block, PositionEmbedding, TokenReadout, timestep_embedding
from rla_pipeline.models.flow import euler_sample, flow_matching_loss
from rla_pipeline.models.normalise import Normaliser, TokenNormalised
from rla_pipeline.models.registry import register_model
from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
from rla_pipeline.utils.config import from_dict


CONDITIONINGS = ("actions", "joint_positions")


@dataclass
class WorldModelConfig:
    """Shape of a world model (shared by RLA-WM and both baselines; each reads the fields it needs).

    Paper RLA-WM: width 1024, cond_depth 8, flow_depth 8, 16 heads, z_scale 10, 30 Euler steps, h in [2, 15].
    """

    num_tokens: int = 16  # N
    token_dim: int = 384  # D
    action_dim: int = 4  # A (per action step)
    max_actions: int = 15  # H: longest action chunk (h_max of the sample dataset)
    width: int = 128
    cond_depth: int = 2  # conditioning transformer blocks (RLA-WM, absolute flow)
    flow_depth: int = 2  # flow transformer blocks (RLA-WM, absolute flow)
    depth: int = 4  # predictor blocks (deterministic baseline)
    heads: int = 4
    mlp_ratio: float = 4.0
    action_embed_dim: int = 64  # per-step action MLP output
    z_scale: float = 10.0  # RLA-WM: flow runs on z / z_scale
    sample_steps: int = 30  # Euler steps at inference
    # deterministic baseline: True predicts s_t + delta; False (DINO-WM) predicts s_{t+h} with no path copying s_t
    predict_residual: bool = False
    rla: RLAConfig = field(default_factory=RLAConfig)  # RLA-WM only: the frozen autoencoder's shape
    # robot (EpisodeMeta.robot) -> its action width: one action MLP per robot to action_embed_dim, then the shared
    # GRU (the paper's multi-robot world model); the data sets it. {}: one MLP of action_dim, no robot identity.
    robots: dict[str, int] = field(default_factory=dict)
    # what the action chunk holds (recorded so a loaded model says what it must be fed): "actions" (the commanded
    # actions) or "joint_positions" (the robot's joint positions over the chunk, the paper's action space; see
    # features.samples.conditioning_signal). The imagined env of WMRL steps with commanded actions: "actions" only.
    conditioning: str = "actions"

    @classmethod
    def from_dict(cls, d: dict | None) -> "WorldModelConfig":
        return from_dict(cls, d, where="WorldModelConfig")

    def __post_init__(self) -> None:
        if isinstance(self.rla, dict):
            self.rla = RLAConfig.from_dict(self.rla)
        for name in ("num_tokens", "token_dim", "action_dim", "max_actions", "width", "heads", "sample_steps"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"WorldModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"WorldModelConfig.width {self.width} must be divisible by heads {self.heads}")
        if self.z_scale <= 0:
            raise ValueError("WorldModelConfig.z_scale must be > 0")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"WorldModelConfig.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        self.robots = {str(k): int(v) for k, v in dict(self.robots or {}).items()}
        wide = {r: a for r, a in self.robots.items() if not 0 < a <= self.action_dim}
        if wide:
            raise ValueError(f"WorldModelConfig.robots {wide}: action widths must be in 1..action_dim={self.action_dim}")


def _step_mlp(action_dim: int, embed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(action_dim, embed), nn.GELU(), nn.Linear(embed, embed))


class ActionEncoder(nn.Module):
    """Action chunk (B, H, A) + mask (B, H) [+ robot index (B,)] -> action token (B, W).

    MLP per step (to ``embed``), then a GRU over the chunk; the token is the GRU state at the last valid step, so
    padded steps after it cannot change it. An all-padded chunk gives a zero token.
    ``robots`` (name -> action width, as the paper): one step MLP per robot reading its first ``width`` action
    columns (the rest is zero padding), the GRU shared; ``robot`` then indexes ``sorted(robots)``.
    """

    def __init__(self, action_dim: int, embed: int, width: int, robots: dict[str, int] | None = None):
        super().__init__()
        self.robots = sorted(robots or {})
        self.widths = [int(robots[r]) for r in self.robots] if robots else []
        if self.robots:
            self.mlps = nn.ModuleList(_step_mlp(a, embed) for a in self.widths)
        else:  # the one-robot layout (state dicts from before per-robot encoders load unchanged)
            self.mlp = _step_mlp(action_dim, embed)
        self.embed = embed
        self.gru = nn.GRU(embed, width, batch_first=True)

    def _embed(self, actions: torch.Tensor, robot: torch.Tensor | None) -> torch.Tensor:
        if not self.robots:
            return self.mlp(actions)
        if robot is None:
            raise ValueError(f"this action encoder has one MLP per robot {self.robots}: pass the robot index")
        x = None
        for i, (mlp, a) in enumerate(zip(self.mlps, self.widths)):
            sel = robot == i
            if bool(sel.any()):
                out = mlp(actions[sel][..., :a])
                if x is None:  # the MLPs' output dtype (bfloat16 under autocast), not the actions'
                    x = out.new_zeros(*actions.shape[:2], self.embed)
                x[sel] = out.to(x.dtype)
        return actions.new_zeros(*actions.shape[:2], self.embed) if x is None else x

    def forward(self, actions: torch.Tensor, mask: torch.Tensor, robot: torch.Tensor | None = None) -> torch.Tensor:
        B, H, _ = actions.shape
        m = mask.to(actions.dtype)[..., None]  # (B, H, 1)
        x = self._embed(actions, robot) * m  # (B, H, E)
        out, _ = self.gru(x)  # (B, H, W)
        steps = torch.arange(1, H + 1, device=mask.device)
        last = (mask.long() * steps).max(dim=1).values  # (B,) 1-based index of the last valid step, 0 if none
        token = out[torch.arange(B, device=out.device), (last - 1).clamp_min(0)]  # (B, W)
        return token * (last > 0).to(token.dtype)[:, None]


class ConditioningTransformer(nn.Module):
    """Normalised s_t tokens (B, N, D) modulated by the action token (B, W) -> conditioning tokens (B, N, W)."""

    def __init__(self, c: WorldModelConfig):
        super().__init__()
        self.inp = nn.Linear(c.token_dim, c.width)
        self.pos = PositionEmbedding(c.num_tokens, c.width)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio, cond_dim=c.width) for _ in range(c.cond_depth))
        self.norm = nn.LayerNorm(c.width)

    def forward(self, s_t_n: torch.Tensor, action_token: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.inp(s_t_n))  # (B, N, W)
        for blk in self.blocks:
            x = blk(x, c=action_token)
        return self.norm(x)


class FlowTransformer(nn.Module):
    """Velocity on x_t (B, T, Din) at flow time t (B,), cross-attending to conditioning tokens (B, N, W)."""

    def __init__(self, c: WorldModelConfig, num_tokens: int, in_dim: int):
        super().__init__()
        W = c.width
        self.inp = nn.Linear(in_dim, W)
        self.pos = PositionEmbedding(num_tokens, W)
        self.time_mlp = nn.Sequential(nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
        self.blocks = nn.ModuleList(
            Block(W, c.heads, c.mlp_ratio, cross=True, context_width=W, cond_dim=W) for _ in range(c.flow_depth)
        )
        # zero-initialised; gated on x_t: the velocity outside the data is x_t / t
        self.out = TokenReadout(W, in_dim, gate_input=True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, action_token: torch.Tensor) -> torch.Tensor:
        c = self.time_mlp(timestep_embedding(t, self.inp.out_features)) + action_token  # (B, W)
        x = self.pos(self.inp(x_t))  # (B, T, W)
        for blk in self.blocks:
            x = blk(x, context=cond, c=c)
        return self.out(x, x_t)  # (B, T, Din)


class _WorldModelBase(TokenNormalised, nn.Module):
    """Shared: normalisation buffers, action token, rollout, loss plumbing."""

    config_class = WorldModelConfig

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        if isinstance(config, dict):
            config = WorldModelConfig.from_dict(config)
        self.config = c = config
        self.tokens = Normaliser(c.token_dim)
        self.actions = Normaliser(c.action_dim)
        self.action_encoder = ActionEncoder(c.action_dim, c.action_embed_dim, c.width, c.robots)
        if c.robots:  # per-robot action statistics (R, A): one robot's joint 3 is not another's joint 3
            self.register_buffer("robot_action_mean", torch.zeros(len(c.robots), c.action_dim))
            self.register_buffer("robot_action_std", torch.ones(len(c.robots), c.action_dim))
        self._robot: str | None = None  # the robot of calls that name none (see for_robot)

    @property
    def robots(self) -> list[str]:
        """Robots with their own action MLP (sorted; the index order of ``robot`` tensors); [] = no identity."""
        return sorted(self.config.robots)

    def robot_ids(self, names) -> torch.Tensor:
        """Robot names -> (B,) index tensor; a robot the model was not trained on raises a clear ValueError."""
        known = self.robots
        unknown = sorted({str(n) for n in names} - set(known))
        if unknown:
            raise ValueError(f"world model has no action encoder for robot(s) {unknown}: it was trained on robots "
                             f"{known}. Add episodes of that robot (EpisodeMeta.robot) to the training data and "
                             f"retrain the world models")
        return torch.as_tensor([known.index(str(n)) for n in names], dtype=torch.long)

    @contextmanager
    def for_robot(self, name: str | None):
        """Calls inside (predict_next, rollout, forward) act for robot ``name`` unless they pass ``robot``."""
        if name is not None and self.config.robots:
            self.robot_ids([name])  # unknown robot: the clear error now
        old, self._robot = self._robot, name
        try:
            yield self
        finally:
            self._robot = old

    def _robot_index(self, robot, batch: int, device) -> torch.Tensor | None:
        if not self.config.robots:
            return None
        if robot is None:
            if self._robot is None and len(self.robots) > 1:
                raise ValueError(f"world model trained on several robots {self.robots}: say which one "
                                 f"(robot=..., or `with model.for_robot(name):`)")
            robot = self._robot or self.robots[0]
        if isinstance(robot, str):
            robot = self.robot_ids([robot]).expand(batch)
        return torch.as_tensor(robot, device=device).long()

    def set_stats(self, token_mean=None, token_std=None, action_mean=None, action_std=None) -> None:
        """Dataset statistics: tokens (D,), actions (A,); None keeps the current value."""
        self.tokens.set(token_mean, token_std)
        self.actions.set(action_mean, action_std)

    @torch.no_grad()
    def set_robot_action_stats(self, stats: dict[str, dict]) -> None:
        """Per-robot action statistics ``{robot: {"mean": (a,), "std": (a,)}}`` over that robot's own columns (the
        padding columns stay mean 0 / std 1, so they normalise to 0); used instead of the shared ``actions`` ones."""
        if not self.config.robots:
            raise ValueError("set_robot_action_stats: this world model has no per-robot action encoders (robots {})")
        missing = sorted(set(self.robots) - set(stats))
        if missing:
            raise ValueError(f"set_robot_action_stats: no statistics for robot(s) {missing}")
        for i, r in enumerate(self.robots):
            m = torch.as_tensor(stats[r]["mean"], dtype=torch.float32).flatten()
            sd = torch.as_tensor(stats[r]["std"], dtype=torch.float32).flatten().clamp_min(1e-6)
            self.robot_action_mean[i].zero_()[: m.numel()] = m
            self.robot_action_std[i].fill_(1.0)[: sd.numel()] = sd

    def action_token(self, actions: torch.Tensor, mask: torch.Tensor, robot=None) -> torch.Tensor:
        """``robot``: (B,) indices into ``robots``, one name, or None (the ``for_robot`` one / the only one)."""
        narrow = self.config.action_dim - actions.shape[-1]
        if narrow > 0:  # a robot's own (narrower) actions: zero-pad like the training data
            actions = F.pad(actions, (0, narrow))
        idx = self._robot_index(robot, actions.shape[0], actions.device)
        if idx is None:
            a = self.actions(actions.float())  # (B, H, A)
        else:  # each row by its robot's statistics
            a = (actions.float() - self.robot_action_mean[idx][:, None]) / self.robot_action_std[idx][:, None]
        return self.action_encoder(a * mask[..., None].to(a.dtype), mask.bool(), idx)  # (B, W)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return world_model_loss(self, batch)

    @torch.no_grad()
    def rollout(self, s_0: torch.Tensor, action_chunks: list[torch.Tensor], masks: list[torch.Tensor],
                generator: torch.Generator | None = None, robot=None) -> list[torch.Tensor]:
        """Autoregressive chunk by chunk: each prediction is the next chunk's s_t -> list of (B, N, D)."""
        s, out = s_0, []
        for a, m in zip(action_chunks, masks):
            s = self.predict_next(s, a, m, generator=generator, robot=robot)
            out.append(s)
        return out

    def _noise(self, shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None:
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


@register_model
class RLAWorldModel(_WorldModelBase):
    """Flow matching on the residual latent action z, decoded by the frozen RLA decoder."""

    def __init__(self, config: WorldModelConfig, rla: ResidualLatentActionAutoencoder | None = None):
        super().__init__(config)
        c = self.config
        if rla is not None:
            c.rla = rla.config
        self.rla = ResidualLatentActionAutoencoder(c.rla)
        if rla is not None:
            self.rla.load_state_dict(rla.state_dict())
            self.set_stats(token_mean=rla.token_mean, token_std=rla.token_std)
        self.rla.requires_grad_(False)
        self.rla.eval()
        self.cond = ConditioningTransformer(c)
        self.flow = FlowTransformer(c, c.rla.latent_tokens, c.rla.latent_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.rla.eval()  # frozen: never in training mode
        return self

    def forward(self, s_t, actions, action_mask, s_th, robot=None):
        """Flow-matching loss on z / z_scale with z = RLA encoder(s_t, s_{t+h}) (no gradient into the RLA)."""
        with torch.no_grad():
            x0 = self.rla.encode(s_t, s_th) / self.config.z_scale  # (B, K, d)
        a = self.action_token(actions, action_mask, robot)  # (B, W)
        cond = self.cond(self.normalise(s_t), a)  # (B, N, W)
        loss = flow_matching_loss(lambda x_t, t: self.flow(x_t, t, cond, a), x0)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def sample_z(self, s_t, actions, action_mask, generator=None, steps: int | None = None, robot=None
                 ) -> torch.Tensor:
        """-> z (B, K, d) on the RLA's scale."""
        a = self.action_token(actions, action_mask, robot)
        cond = self.cond(self.normalise(s_t), a)
        K, d = self.config.rla.latent_tokens, self.config.rla.latent_dim
        noise = self._noise((s_t.shape[0], K, d), s_t, generator)
        x = euler_sample(lambda x, t: self.flow(x, t, cond, a), noise, steps or self.config.sample_steps)
        return x * self.config.z_scale

    @torch.no_grad()
    def predict_next(self, s_t, actions, action_mask, generator=None, robot=None):
        return self.rla.decode(s_t, self.sample_z(s_t, actions, action_mask, generator, robot=robot))


@register_model
class DeterministicWorldModel(_WorldModelBase):
    """DINO-WM style: action embedding concatenated to every patch token, ViT predictor, MSE on s_{t+h}.

    ``predict_residual`` False (direct): the prediction is the readout of the transformer's outputs, s_t enters only
    as the transformer's input. True (residual): s_t + that readout.
    """

    def __init__(self, config: WorldModelConfig):
        super().__init__(config)
        c = self.config
        self.inp = nn.Linear(c.token_dim + c.width, c.width)
        self.pos = PositionEmbedding(c.num_tokens, c.width)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.out = TokenReadout(c.width, c.token_dim, gate_input=False)  # zero-initialised, no gate on s_t

    def _predict_normalised(self, s_t, actions, action_mask, robot=None):
        s_n = self.normalise(s_t)  # (B, N, D)
        a = self.action_token(actions, action_mask, robot)  # (B, W)
        x = torch.cat([s_n, a[:, None].expand(-1, s_n.shape[1], -1)], dim=-1)  # (B, N, D+W)
        x = self.pos(self.inp(x))
        for blk in self.blocks:
            x = blk(x)
        out = self.out(x)  # (B, N, D): from the transformer's outputs only
        return s_n + out if self.config.predict_residual else out

    def forward(self, s_t, actions, action_mask, s_th, robot=None):
        loss = F.mse_loss(self._predict_normalised(s_t, actions, action_mask, robot), self.normalise(s_th))
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def predict_next(self, s_t, actions, action_mask, generator=None, robot=None):
        return self.denormalise(self._predict_normalised(s_t, actions, action_mask, robot))


@register_model
class AbsoluteFlowWorldModel(_WorldModelBase):
    """Flow matching on the absolute next-state tokens (normalised, (B, N, D)) with RLA-WM's conditioning."""

    def __init__(self, config: WorldModelConfig):
        super().__init__(config)
        c = self.config
        self.cond = ConditioningTransformer(c)
        self.flow = FlowTransformer(c, c.num_tokens, c.token_dim)

    def forward(self, s_t, actions, action_mask, s_th, robot=None):
        x0 = self.normalise(s_th)  # (B, N, D)
        a = self.action_token(actions, action_mask, robot)
        cond = self.cond(self.normalise(s_t), a)
        loss = flow_matching_loss(lambda x_t, t: self.flow(x_t, t, cond, a), x0)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def predict_next(self, s_t, actions, action_mask, generator=None, robot=None):
        a = self.action_token(actions, action_mask, robot)
        cond = self.cond(self.normalise(s_t), a)
        noise = self._noise(s_t.shape, s_t, generator)
        x = euler_sample(lambda x, t: self.flow(x, t, cond, a), noise, self.config.sample_steps)
        return self.denormalise(x)


WORLD_MODELS = {"rla_wm": RLAWorldModel, "deterministic": DeterministicWorldModel, "absolute_flow": AbsoluteFlowWorldModel}


def world_model_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Trainer loss_fn for every world model (goes through forward, so DDP-safe); ``batch["robot"]``: (B,) robot
    indices of a multi-robot model (the data's order of ``robots``)."""
    robot = {"robot": batch["robot"]} if "robot" in batch else {}
    return model(batch["s_t"].float(), batch["actions"].float(), batch["action_mask"], batch["s_th"].float(), **robot)
