"""A batched, gymnasium-style vector env that lives inside a world model (no simulator, no task code).

State: DINO tokens s (B, N, D). One env step executes one action chunk a (B, H, A):
``s' = world_model.predict_next(s, a, mask)``. Reward is the negative mean absolute difference (token L1) between
s' and a reference frame: the demo's last frame (mode "goal") or the demo frame at the same time step (mode
"corresponding": after k chunks, frame k * H of the demo the env was started from). Success: L1 < threshold.

Episodes start from dataset start states (the first frame of a demo) and end on success (``terminated``, when
``terminate_on_success``) or at their start state's time limit (``truncated``). The limit is per start state: by
default long enough for its task's longest demo (``ceil(T_max / frames per chunk) + max_chunks_margin`` chunks,
:func:`demo_time_limits`), so a goal as far as the demo's last frame stays reachable; ``max_chunks`` set = the same
explicit limit for every start state. Finished envs reset in the same call
("same-step" autoreset, like gymnasium 0.29's vector envs): the returned observation is already the new episode's
first one; the last observation of the finished episode is in ``info["final_obs"]``.

The paper's success threshold (0.032) is in the units of its DINOv3 ViT-L tokens. Our tokens differ (model, size,
random weights in tests), so :func:`calibrate_success_threshold` derives a default from the data instead: a quantile
of the token L1 between each demo's frame one chunk before its end and its final frame — "within one chunk of the
goal, as a demo is" counts as success.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from rla_pipeline.evaluation.metrics import token_l1
from rla_pipeline.utils.config import from_dict

REWARD_MODES = ("goal", "corresponding")
# Time limit (chunks) of envs built from a plain start-state tensor with max_chunks null: it has no demo lengths.
PLAIN_START_MAX_CHUNKS = 8

logger = logging.getLogger(__name__)


@dataclass
class ImaginedEnvConfig:
    """Imagined env settings (the paper: 64 envs, chunk 8, reward "goal" or "corresponding", threshold 0.032)."""

    num_envs: int = 64  # B: imagined envs stepped together in one world-model call
    reward_mode: str = "goal"  # "goal" | "corresponding"
    # episode length in action chunks (chunk length H comes from the actions). None = per start state, from its
    # task's longest demo (see demo_time_limits; needs StartStates); an int = that limit for every start state
    # (an explicit override: a limit shorter than a task's demos can make its goal unreachable).
    max_chunks: int | None = None
    max_chunks_margin: int = 2  # chunks added to the demo-derived limit (max_chunks None only)
    success_threshold: float = 0.0  # token L1 below which an imagined state counts as success; must be > 0
    reward_scale: float = 1.0  # reward = -reward_scale * L1 (+ success_bonus on success)
    success_bonus: float = 0.0
    terminate_on_success: bool = True
    action_low: float = -1.0  # actions are clipped to [action_low, action_high] before the world model
    action_high: float = 1.0
    # actions of each predicted chunk the world model executes per step (the rest are masked out); None = the whole
    # chunk. Must equal the simulator's evaluation.sim.execute_steps so that PPO optimises what the simulator runs.
    execute_steps: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "ImaginedEnvConfig":
        return from_dict(cls, d, where="ImaginedEnvConfig")

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"ImaginedEnvConfig.reward_mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if self.num_envs <= 0 or (self.max_chunks is not None and self.max_chunks <= 0):
            raise ValueError("ImaginedEnvConfig: num_envs and max_chunks (or null = from the demos) must be > 0")
        if self.max_chunks_margin < 0:
            raise ValueError("ImaginedEnvConfig.max_chunks_margin must be >= 0")
        if self.success_threshold <= 0:
            raise ValueError("ImaginedEnvConfig.success_threshold must be > 0 (calibrate it with "
                             "calibrate_success_threshold)")
        if self.action_high <= self.action_low:
            raise ValueError("ImaginedEnvConfig: action_high must be > action_low")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError("ImaginedEnvConfig.execute_steps must be >= 1 (or null = the whole chunk)")


@dataclass
class StartStates:
    """Where imagined episodes begin and what they are scored against.

    tokens (M,N,D): first frame of each demo. goals (M,N,D): its last frame. corresponding (M,L,N,D): the demo frame
    after k+1 chunks at index k (clamped to the last frame; L = the longest time limit). task (M,) long: task index
    of each demo. max_chunks (M,) long: each start state's time limit in chunks (truncation after that many steps).
    """

    tokens: torch.Tensor
    goals: torch.Tensor
    corresponding: torch.Tensor
    task: torch.Tensor
    episode_ids: list[str]
    max_chunks: torch.Tensor | None = None


def demo_time_limits(lengths: Sequence[int], task_index: Sequence[int], chunk: int, margin: int = 2) -> list[int]:
    """Per start state: chunks enough to replay its task's longest demo, ``ceil(max T of the task / chunk) + margin``.

    ``lengths``: frames of each demo (one start state each); ``task_index``: its task; ``chunk``: frames one
    imagined step advances (the executed actions per chunk). The goal is the demo's last frame, so a limit shorter
    than ``ceil(T / chunk)`` makes it unreachable at the demo's own pace; ``margin`` leaves room for a slower policy.
    """
    if chunk < 1 or margin < 0:
        raise ValueError(f"demo_time_limits: chunk must be >= 1 and margin >= 0, got {chunk}, {margin}")
    longest: dict[int, int] = {}
    for T, k in zip(lengths, task_index):
        longest[int(k)] = max(longest.get(int(k), 0), int(T))
    return [max(1, -(-longest[int(k)] // chunk)) + margin for k in task_index]


def build_start_states(token_seqs: Sequence[np.ndarray | torch.Tensor], chunk: int, max_chunks: int | None = None,
                       task_index: Sequence[int] | None = None, episode_ids: Sequence[str] | None = None,
                       margin: int = 2) -> StartStates:
    """Demo token sequences, each (T_i, N, D) -> :class:`StartStates` for chunk length ``chunk`` (frames per chunk).

    ``max_chunks``: every start state's time limit; None = per start state from its task's longest demo among
    ``token_seqs`` plus ``margin`` chunks (:func:`demo_time_limits`)."""
    if not token_seqs:
        raise ValueError("build_start_states needs at least one demo token sequence")
    M = len(token_seqs)
    task = list(task_index) if task_index is not None else [0] * M
    seqs = [seq.float() if isinstance(seq, torch.Tensor) else torch.from_numpy(np.asarray(seq, dtype=np.float32))
            for seq in token_seqs]
    if max_chunks is None:
        limits = demo_time_limits([s.shape[0] for s in seqs], task, chunk, margin)
    else:
        if max_chunks < 1:
            raise ValueError(f"build_start_states: max_chunks must be >= 1 (or None = from the demos), "
                             f"got {max_chunks}")
        limits = [int(max_chunks)] * M
    L = max(limits)
    starts, goals, corr = [], [], []
    for seq in seqs:
        T = seq.shape[0]
        starts.append(seq[0])
        goals.append(seq[T - 1])
        idx = torch.clamp(torch.arange(1, L + 1) * chunk, max=T - 1)
        corr.append(seq[idx])  # (L, N, D)
    return StartStates(
        tokens=torch.stack(starts), goals=torch.stack(goals), corresponding=torch.stack(corr),
        task=torch.as_tensor(task, dtype=torch.long),
        episode_ids=list(episode_ids) if episode_ids is not None else [str(i) for i in range(M)],
        max_chunks=torch.as_tensor(limits, dtype=torch.long),
    )


def calibrate_success_threshold(token_seqs: Sequence[np.ndarray | torch.Tensor], chunk: int,
                                quantile: float = 0.5) -> float:
    """Quantile over demos of L1(s_{T-1-chunk}, s_{T-1}): how close "one chunk before the goal" is, in token units."""
    d = []
    for seq in token_seqs:
        seq = torch.from_numpy(np.array(seq, dtype=np.float32))
        T = seq.shape[0]
        d.append(float(token_l1(seq[max(0, T - 1 - chunk)][None], seq[T - 1][None])[0]))
    thr = float(np.quantile(np.asarray(d), quantile))
    if thr <= 0:  # static demos (identical frames): fall back to a tiny positive threshold
        thr = 1e-6
    return thr


class ImaginedVectorEnv:
    """B imagined envs stepped in one batched world-model call (see the module docstring).

    world_model: anything with ``predict_next(s_t (B,N,D), actions (B,H,A), action_mask (B,H), generator=None)``.
    start_states: :class:`StartStates` (or a (M,N,D) tensor, then ``goals`` is required: (M,N,D) for "goal",
    (M,L,N,D) for "corresponding").
    Time limit (chunks) of an episode, per start state (``limit_of_start`` (M,)): ``cfg.max_chunks`` when set (every
    start state alike), else the StartStates' own ``max_chunks`` (from its task's demos); a plain tensor has no
    demos: ``PLAIN_START_MAX_CHUNKS`` then, with a warning.
    Observations: dict ``{"tokens": (B,N,D) float32, "task": (B,) long}``.
    """

    robot_of_start: torch.Tensor | None = None  # (M,) robot id per start state (multi-robot world models)

    def __init__(self, world_model, start_states: StartStates | torch.Tensor, goals: torch.Tensor | None = None,
                 cfg: ImaginedEnvConfig | None = None, task_index: torch.Tensor | None = None,
                 device: torch.device | str = "cpu"):
        if cfg is None:
            raise ValueError("ImaginedVectorEnv needs an ImaginedEnvConfig (with a calibrated success_threshold)")
        self.cfg = cfg
        self.device = torch.device(device)
        self.world_model = world_model
        limits = None
        if isinstance(start_states, StartStates):
            starts = start_states.tokens
            goals = start_states.goals if cfg.reward_mode == "goal" else start_states.corresponding
            task_index = start_states.task
            limits = start_states.max_chunks
        else:
            starts = start_states
            if goals is None:
                raise ValueError("ImaginedVectorEnv: pass goals with a plain start-state tensor")
        M = starts.shape[0]
        if cfg.max_chunks is not None:
            limits = torch.full((M,), int(cfg.max_chunks), dtype=torch.long)
        elif limits is None:  # no demos to size the episodes from
            logger.warning("ImaginedVectorEnv: max_chunks null but plain start-state tensors carry no demo lengths: "
                           "%d chunks for every start state (build_start_states sizes them from the demos)",
                           PLAIN_START_MAX_CHUNKS)
            limits = torch.full((M,), PLAIN_START_MAX_CHUNKS, dtype=torch.long)
        limits = torch.as_tensor(limits, dtype=torch.long)
        if limits.shape != (M,) or int(limits.min()) < 1:
            raise ValueError(f"per-start time limits must be (M={M},) and >= 1, got {tuple(limits.shape)}")
        want = 3 if cfg.reward_mode == "goal" else 4
        if goals.dim() != want or goals.shape[0] != starts.shape[0] or goals.shape[-2:] != starts.shape[-2:]:
            raise ValueError(f"goals for mode {cfg.reward_mode!r} must be ({'M,N,D' if want == 3 else 'M,L,N,D'}) "
                             f"matching start states {tuple(starts.shape)}; got {tuple(goals.shape)}")
        self.starts = starts.float().to(self.device)  # (M, N, D)
        self.goals = goals.float().to(self.device)  # (M, N, D) | (M, L, N, D)
        self.limit_of_start = limits.to(self.device)  # (M,) chunks before truncation
        self.task_of_start = (task_index if task_index is not None else torch.zeros(M, dtype=torch.long)).to(self.device)
        self.num_envs = cfg.num_envs
        self.num_tokens, self.token_dim = starts.shape[1], starts.shape[2]
        self._gen = torch.Generator(device="cpu")
        self._noise_gen: torch.Generator | None = None
        self.start_idx = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.k = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # chunks done this episode
        self.state: torch.Tensor | None = None

    # --- helpers -----------------------------------------------------------------------------------------------
    def _obs(self) -> dict[str, torch.Tensor]:
        return {"tokens": self.state, "task": self.task_of_start[self.start_idx]}

    def _sample_starts(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.starts.shape[0], (n,), generator=self._gen).to(self.device)

    def _reference(self) -> torch.Tensor:
        """Reference frame for the current step count (after the step's k += 1): (B, N, D)."""
        if self.cfg.reward_mode == "goal":
            return self.goals[self.start_idx]
        L = self.goals.shape[1]
        return self.goals[self.start_idx, torch.clamp(self.k - 1, 0, L - 1)]

    def reset_to(self, start_index: torch.Tensor, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Start env i from start state ``start_index[i]`` (B,) (evaluation over every start state). Returns obs."""
        self.reset(seed=seed)
        idx = torch.as_tensor(start_index, dtype=torch.long, device=self.device)
        if idx.shape != (self.num_envs,):
            raise ValueError(f"start_index must be ({self.num_envs},), got {tuple(idx.shape)}")
        self.start_idx = idx.clone()
        self.state = self.starts[self.start_idx].clone()
        return self._obs()

    # --- gymnasium-style API -----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Start every env from a random dataset start state. Returns (obs, info)."""
        if seed is not None:
            self._gen.manual_seed(int(seed))
            self._noise_gen = torch.Generator(device=self.device)
            self._noise_gen.manual_seed(int(seed) + 1)
        self.start_idx = self._sample_starts(self.num_envs)
        self.k.zero_()
        self.state = self.starts[self.start_idx].clone()
        return self._obs(), {"start_index": self.start_idx.clone()}

    @torch.no_grad()
    def step(self, action_chunks: torch.Tensor):
        """action_chunks (B,H,A) -> (obs, reward (B,), terminated (B,), truncated (B,), info).

        info: ``distance`` (B,) token L1 to the reference, ``success`` (B,) bool, ``final_obs`` (B,N,D) the state
        reached this step before any autoreset, ``episode_return``/``episode_length`` are not tracked here (PPO does).
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(action_chunks, dtype=torch.float32, device=self.device)
        if a.dim() != 3 or a.shape[0] != self.num_envs:
            raise ValueError(f"action_chunks must be (B={self.num_envs}, H, A), got {tuple(a.shape)}")
        a = a.clamp(self.cfg.action_low, self.cfg.action_high)
        mask = torch.ones(a.shape[:2], dtype=torch.bool, device=self.device)
        if self.cfg.execute_steps is not None:  # receding horizon, as the simulator runs it
            mask[:, self.cfg.execute_steps:] = False
            a = a * mask[..., None]
        # a world model over several robots steps each env with its start state's robot's action encoder
        kw = {} if self.robot_of_start is None else {"robot": self.robot_of_start[self.start_idx]}
        nxt = self.world_model.predict_next(self.state, a, mask, generator=self._noise_gen, **kw).float()  # (B, N, D)
        self.k += 1
        dist = token_l1(nxt, self._reference())
        success = dist < self.cfg.success_threshold
        reward = -self.cfg.reward_scale * dist + self.cfg.success_bonus * success.float()
        terminated = success if self.cfg.terminate_on_success else torch.zeros_like(success)
        truncated = (self.k >= self.limit_of_start[self.start_idx]) & ~terminated
        done = terminated | truncated
        info = {"distance": dist, "success": success, "final_obs": nxt.clone(),
                "final_task": self.task_of_start[self.start_idx].clone()}
        self.state = nxt
        if bool(done.any()):
            n = int(done.sum())
            self.start_idx[done] = self._sample_starts(n)
            self.state[done] = self.starts[self.start_idx[done]]
            self.k[done] = 0
        return self._obs(), reward, terminated, truncated, info


@torch.no_grad()
def evaluate_start_states(policy, env: ImaginedVectorEnv, seed: int = 0, deterministic: bool = True
                          ) -> dict[str, float]:
    """Score ``policy`` on exactly ONE imagined episode per start state of ``env``.

    Counting the first n finished episodes of self-resetting envs over-weights fast successes (a quickly solved start
    state finishes, resets and is counted again before slow ones end); here start states run in groups of
    ``num_envs`` (env i from start state i of the group) and each env's first episode is the only one counted.
    ``policy``: a TokenPolicy or an actor-critic (``rl.actor_critic``) matching the env's observations (an
    :class:`~rla_pipeline.rl.actor_critic.ImageActorCritic` on a ``DecodedImageEnv``).
    Returns mean_return, success_rate, final_distance, episodes (= the number of start states).
    """
    from rla_pipeline.rl.actor_critic import as_actor_critic

    ac = as_actor_critic(policy)
    M, B = env.starts.shape[0], env.num_envs
    returns, successes, dists = [], [], []
    for g0 in range(0, M, B):
        idx = torch.arange(g0, min(g0 + B, M))
        n = len(idx)
        obs = env.reset_to(torch.cat([idx, idx[:1].repeat(B - n)]), seed=seed + g0)  # pad with a repeat, not counted
        ret = torch.zeros(B, device=env.device)
        done = torch.zeros(B, dtype=torch.bool, device=env.device)
        succ = torch.zeros(B, dtype=torch.bool, device=env.device)
        dist = torch.zeros(B, device=env.device)
        while not bool(done[:n].all()):
            if deterministic:
                a = ac.action_mean(obs)
            else:
                a = ac.dist_value(ac.encode_obs(obs))[0].sample().view(B, ac.chunk, ac.action_dim)
            obs, r, term, trunc, info = env.step(a)
            live = ~done  # envs still in their first episode
            ret += r * live
            fin = live & (term | trunc)
            succ |= fin & info["success"]
            dist = torch.where(fin, info["distance"], dist)
            done |= fin
        returns += ret[:n].tolist()
        successes += succ[:n].tolist()
        dists += dist[:n].tolist()
    return {"mean_return": float(np.mean(returns)), "success_rate": float(np.mean(successes)),
            "final_distance": float(np.mean(dists)), "episodes": float(M)}


def imagined_steps_per_second(env: ImaginedVectorEnv, action_chunks: torch.Tensor, n_calls: int = 5,
                              seed: int = 0) -> dict[str, float]:
    """Time ``n_calls`` batched steps with fixed actions (B,H,A). Returns chunk-steps/s and frames/s
    (a chunk stands for H simulator steps, so frames/s = B * H * calls / seconds)."""
    import time

    env.reset(seed=seed)
    env.step(action_chunks)  # warm-up (allocations, lazy init)
    t0 = time.perf_counter()
    for _ in range(n_calls):
        env.step(action_chunks)
    dt = time.perf_counter() - t0
    B, H = action_chunks.shape[:2]
    return {"calls_per_s": n_calls / dt, "env_chunks_per_s": B * n_calls / dt, "frames_per_s": B * H * n_calls / dt,
            "num_envs": float(B), "chunk": float(H)}
