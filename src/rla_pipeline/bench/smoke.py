"""The GPU smoke run (issue 12, item 4): every paper-scale stage for a few steps on one accelerator.

Stages, each through the project's own code (the stages' builders, ``training.trainer.train``):
  features       two synthetic episodes -> FeatureCache.update with the given encoder
  train.*        a few optimisation steps of every trainer with bf16 autocast: RLA, RLA-WM, the two world-model
                 baselines, BC-ResNet, BC+RLA, token BC, the pixel decoder (tokens -> RGB UNet half)
  ppo            one imagined PPO iteration (rl.ppo.train_ppo in rl.imagined_env.ImaginedVectorEnv over RLA-WM)
  ddp            the RLA trainer with TrainerConfig.num_processes = all visible GPUs (NCCL; gloo and 2 processes on
                 the CPU), i.e. training.distributed.launch_local; with ONE visible GPU the trainer does not start a
                 process group, so a 1-rank NCCL group + DDP wrapper is run directly
:class:`Smoke` runs them and prints the table (``scripts/gpu_smoke.py``); ``bench.throughput`` times the same
trainers at the small default sizes.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

TASK = "SyntheticPush-v0"
STAGES = ("features", "train.rla", "train.rla_wm", "train.deterministic", "train.absolute_flow", "train.bc",
          "train.bc_rla", "train.token_bc", "train.pixel_decoder", "ppo", "ddp")


# ------------------------------------------------------------------------------------------------ sizes
@dataclass
class Sizes:
    """Everything the smoke run builds, at paper scale (from conf/paper) or tiny (CPU check of the script)."""

    encoder: dict
    frames: int  # per synthetic episode
    frame_size: int  # px of the synthetic episodes
    batch_size: int
    rla_samples: dict
    wm_samples: dict
    rla_model: dict
    wm_model: dict
    bc_policy: dict
    token_policy: dict
    pixel_decoder: dict
    env: dict
    ppo: dict
    labels: dict = field(default_factory=dict)


def tiny_sizes(batch_size: int | None = None) -> Sizes:
    """Tiny widths: the smoke run's code checked on a CPU in minutes."""
    return Sizes(
        encoder=dict(model_name="vit_small_patch14_dinov2.lvd142m", image_size=28, weights="random", batch_size=16),
        frames=16, frame_size=32, batch_size=batch_size or 8,
        rla_samples=dict(h_min=2, h_max=6), wm_samples=dict(h_min=2, h_max=4),
        rla_model=dict(width=32, enc_depth=1, dec_depth=1, heads=2, latent_tokens=2, latent_dim=4),
        wm_model=dict(width=32, cond_depth=1, flow_depth=1, depth=2, heads=2, action_embed_dim=8, sample_steps=2),
        bc_policy=dict(backbone="resnet10t", image_size=16, chunk=4, hidden=16),
        token_policy=dict(chunk=4, token_proj=2, hidden=16),
        pixel_decoder=dict(image_size=32, channels=[16, 8], blocks_per_level=1, groups=4),
        env=dict(num_envs=4, max_chunks=2, success_threshold=0.032),
        ppo=dict(num_steps=2, update_epochs=1, num_minibatches=2),
        labels={"scale": "tiny (CPU check of the script, not paper scale)"},
    )


def paper_sizes(p: dict, batch_size: int | None = None, weights: str = "random") -> Sizes:
    """Paper widths from ``p``, the parameters of ``--env=paper`` (conf/base soft-merged with conf/paper)."""
    enc = dict(p["features"]["encoder"])
    enc.update(weights=weights, allow_random_fallback=False, batch_size=16)
    rl = p["rl"]
    return Sizes(
        encoder=enc, frames=40, frame_size=224, batch_size=batch_size or 16,
        rla_samples=dict(p["rla"]["samples"]), wm_samples=dict(p["world_model"]["samples"]),
        rla_model=dict(p["rla"]["model"]), wm_model=dict(p["world_model"]["model"]),
        bc_policy=dict(p["actionless_bc"]["policy"]), token_policy=dict(rl["token_policy"]),
        pixel_decoder=dict(p["pixel_decoder"]["model"]),
        env={**rl["env"]}, ppo=dict(num_steps=rl["ppo"]["num_steps"], gamma=rl["ppo"]["gamma"],
                                    learning_rate=rl["ppo"]["learning_rate"]),
        labels={"scale": "paper widths (conf/paper); batch reduced to fit one GPU"},
    )


# ------------------------------------------------------------------------------------------------ measurement
def peak_memory_mib(device) -> float:
    """CUDA: ``torch.cuda.max_memory_allocated``; CPU: this process's peak RSS so far (ru_maxrss, monotonic)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Trainer callback (called after every step when ``val_every=1`` and there is no val set): step end times,
    peak memory and, under DDP, the process group's backend and size. Written to ``out`` (a JSON file) when given,
    because DDP workers are separate processes. Module-level and plain so it pickles into spawned workers."""

    def __init__(self, out: str | None = None):
        self.out = out
        self.times: list[float] = []
        self.memory_mib = 0.0
        self.dist: dict = {}

    def __call__(self, step: int, metrics: dict) -> None:
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_initialized() else torch.device("cpu")
        self.memory_mib = peak_memory_mib(dev)
        if dist.is_available() and dist.is_initialized():
            self.dist = {"backend": str(dist.get_backend()), "world_size": dist.get_world_size(),
                         "rank": dist.get_rank()}
        if self.out:
            Path(self.out).write_text(json.dumps(self.summary()))

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]

    def summary(self) -> dict:
        st = self.step_times()
        return {"steps": len(self.times), "step_s": statistics.median(st) if st else float("nan"),
                "memory_mib": self.memory_mib, "dist": self.dist}


def timing_trainer_config(run_name: str, steps: int, batch_size: int, device: str, amp: str = "bf16", **kw):
    """TrainerConfig for a timed run: constant lr, no warm-up, no checkpoints, no progress bar; ``val_every=1``
    without a val set, so the callbacks run after every step (that is how StepClock sees each step)."""
    from rla_pipeline.stages.common import trainer_config

    block = dict(max_steps=steps, batch_size=batch_size, lr=1e-4, warmup_steps=0, schedule="constant", amp=amp,
                 log_every=1, val_every=1, checkpoint_every=10**9, progress=False, **kw)
    return trainer_config(block, run_name=run_name, device=device, checkpoint_dir=None)


# ------------------------------------------------------------------------------------------------ data
class SmokeData:
    """Two synthetic episodes, their feature cache (the given encoder) and their split (both train)."""

    def __init__(self, root: Path, sz: Sizes, device: str):
        from rla_pipeline.episodes.format import EpisodeStore
        from rla_pipeline.episodes.synthetic import synthetic_episode
        from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
        from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

        self.store = EpisodeStore(root / "episodes")
        self.ids = []
        for i in range(2):
            ep = synthetic_episode(f"smoke-{i}", task=TASK, num_frames=sz.frames, size=sz.frame_size, seed=i)
            self.store.write(ep)
            self.ids.append(ep.meta.episode_id)
        self.index = self.store.index()
        self.splits = pd.DataFrame({"episode_id": self.ids, "split": "train"})
        self.encoder = DinoEncoder(EncoderConfig.from_dict({**sz.encoder, "device": device}))
        self.cache = FeatureCache(root / "cache")
        t0 = time.perf_counter()
        self.cache.update(self.store, self.encoder, self.ids, FeatureCacheConfig(progress=False))
        self.encode_s = time.perf_counter() - t0  # decode + encode + write, without building the encoder
        # every frame counts towards the token statistics (the stages sample up to stats_max_frames of them)
        self.num_frames = sum(self.cache.tokens(e).shape[0] for e in self.ids)

    def tokens(self):
        return [self.cache.tokens(e) for e in self.ids]


# ------------------------------------------------------------------------------------------------ stages
class Smoke:
    """The stages on ``device`` at sizes ``sz``, ``steps`` optimisation steps per trainer, working in ``tmp``;
    one table row per stage (``rows``), trained models in ``models``."""

    run_prefix = "smoke"

    def __init__(self, sz: Sizes, device: str, steps: int, tmp: Path, ddp_single: bool = False):
        import torch

        self.device = torch.device(device)
        self.sz, self.steps, self.tmp, self.ddp_single = sz, steps, Path(tmp), ddp_single
        self.rows: list[dict] = []
        self.data: SmokeData | None = None
        self.models: dict = {}

    # --- bookkeeping ---
    def stage(self, name: str, fn) -> None:
        """Run ``fn`` (-> row fields) as stage ``name``: a failure is reported in the row, the others still run."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        row = {"stage": name, "status": "ok", "step_s": float("nan"), "memory_mib": float("nan"), "detail": ""}
        try:
            row.update(fn() or {})
            if self.device.type == "cuda" and not row.get("memory_from_worker"):
                torch.cuda.synchronize()
                row["memory_mib"] = peak_memory_mib(self.device)
        except Exception as err:  # noqa: BLE001 - reported in the table; the other stages still run
            row["status"] = "FAIL"
            row["detail"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            traceback.print_exc()
        row["wall_s"] = time.perf_counter() - t0
        if self.device.type != "cuda" and not row.get("memory_from_worker"):
            row["memory_mib"] = peak_memory_mib(self.device)
        row.pop("memory_from_worker", None)
        self.rows.append(row)
        print(f"[smoke] {name}: {row['status']} {row['detail']}", file=sys.stderr, flush=True)

    def train_model(self, run: str, model, loss_fn, ds, **kw) -> dict:
        """A few steps of ``training.trainer.train``; keeps the trained model as ``models[run]``."""
        from rla_pipeline.training.trainer import train

        clock = StepClock()
        cfg = timing_trainer_config(f"{self.run_prefix}.{run}", self.steps, min(self.sz.batch_size, len(ds)),
                                    str(self.device), **kw)
        result = train(model, loss_fn, ds, None, cfg, callbacks=[clock])
        loss = float(result.history.loc[result.history["split"] == "train", "loss"].iloc[-1])
        n_params = sum(p.numel() for p in model.parameters())
        self.models[run] = result.model
        s = clock.summary()
        return {"step_s": s["step_s"], "detail": f"{n_params / 1e6:.1f}M params, batch {cfg.batch_size}, "
                                                 f"bf16, last loss {loss:.3g}"}

    # --- what the trainers read, through the stages' builders ---
    def rla_data(self):
        """The RLA's token pairs and token statistics (stages.rla.build_rla_data over both episodes)."""
        from rla_pipeline.features.samples import SampleConfig
        from rla_pipeline.models.rla import RLAConfig
        from rla_pipeline.stages.rla import RLAStageConfig, build_rla_data

        cfg = RLAStageConfig(samples=SampleConfig.from_dict(self.sz.rla_samples),
                             model=RLAConfig.from_dict(self.sz.rla_model), stats_max_frames=self.data.num_frames)
        return build_rla_data(self.data.cache, self.data.splits, self.data.index, cfg), cfg.model

    def rla_model(self):
        """-> (a fresh RLA autoencoder from stages.rla.build_rla_model, its train token pairs)."""
        from rla_pipeline.stages.rla import build_rla_model

        data, model = self.rla_data()
        return build_rla_model(data, model), data.train

    def world_model(self, kind: str, rla=None):
        """-> (a fresh world model of ``kind`` from stages.world_model.build_world_model, its train token pairs)."""
        from rla_pipeline.features.samples import SampleConfig
        from rla_pipeline.models.world_model import WorldModelConfig
        from rla_pipeline.stages.common import token_pair_datasets
        from rla_pipeline.stages.world_model import WorldModelStageConfig, build_world_model

        d = self.data
        p = WorldModelStageConfig(samples=SampleConfig.from_dict(self.sz.wm_samples),
                                  model=WorldModelConfig.from_dict(self.sz.wm_model), stats_max_frames=d.num_frames)
        ds, _ = token_pair_datasets(d.cache, d.index, d.ids, [], p.samples)
        # one shared action MLP (no per-robot ones: the items carry no robot index), as the smoke run always had
        return build_world_model(kind, p, ds, d.ids, {}, d.cache, d.index, rla), ds

    # --- the stages ---
    def features(self) -> dict:
        self.data = SmokeData(self.tmp, self.sz, str(self.device))
        enc = self.data.encoder
        n = sum(self.data.cache.tokens(e).shape[0] for e in self.data.ids)
        # "step" = one encoder batch of the cache fill (decode + encode + write, averaged over the batches)
        return {"step_s": self.data.encode_s / max(1, enc.calls), "detail": (
            f"{enc.cfg.model_name} @ {enc.cfg.image_size}px = {enc.num_tokens} tokens x {enc.token_dim}, "
            f"weights {enc.weights_tag}{' (NOT DINO features)' if enc.weights_tag == 'random-init' else ''}, "
            f"{n} frames in {enc.calls} batches")}

    def train_rla(self) -> dict:
        from rla_pipeline.models.rla import rla_loss

        model, ds = self.rla_model()
        return self.train_model("rla", model, rla_loss, ds)

    def train_world_model(self, kind: str) -> dict:
        from rla_pipeline.models.world_model import world_model_loss

        rla = self.models.get("rla") if kind == "rla_wm" else None
        if kind == "rla_wm" and rla is None:
            raise RuntimeError("needs the RLA from train.rla, which failed")
        model, ds = self.world_model(kind, rla)
        return self.train_model(kind, model, world_model_loss, ds)

    def image_episodes(self, with_z: bool) -> list[dict]:
        import torch

        from rla_pipeline.episodes.format import episode_actions
        from rla_pipeline.rl.bc import resize_frames

        size, chunk = self.sz.bc_policy["image_size"], self.sz.bc_policy["chunk"]
        rla = self.models.get("rla")
        eps = []
        for eid in self.data.ids:
            ep = {"frames": resize_frames(self.data.store.read_frames(eid), size), "task": 0,
                  "actions": episode_actions(self.data.store.read_steps(eid))}
            if with_z:
                # rl.bc.latent_targets runs on the CPU only (inputs are not moved to the model's device); at paper
                # width that is minutes of CPU time, so the targets are computed here on the smoke device.
                tok = torch.from_numpy(self.data.cache.tokens(eid).astype("float32"))
                nxt = torch.clamp(torch.arange(len(tok)) + chunk, max=len(tok) - 1)
                m = rla.to(self.device).eval()
                with torch.no_grad():
                    ep["z"] = torch.cat([m.encode(tok[j:j + 16].to(self.device),
                                                  tok[nxt[j:j + 16]].to(self.device)).float().cpu()
                                         for j in range(0, len(tok), 16)])
                rla.cpu()
            eps.append(ep)
        return eps

    def train_bc(self, with_rla: bool) -> dict:
        from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy
        from rla_pipeline.rl.bc import BCLoss, ImageChunkDataset

        rla = self.models.get("rla")
        if with_rla and rla is None:
            raise RuntimeError("needs the RLA from train.rla, which failed")
        pcfg = {**self.sz.bc_policy, "action_dim": 4, "num_tasks": 1, "task_names": [TASK]}
        if with_rla:
            pcfg.update(latent_tokens=rla.config.latent_tokens, latent_dim=rla.config.latent_dim)
        conf = BCResNetConfig.from_dict(pcfg)
        latent = (conf.latent_tokens, conf.latent_dim) if with_rla else None
        ds = ImageChunkDataset(self.image_episodes(with_rla), conf.chunk, 4, latent_shape=latent)
        loss = BCLoss(latent_l1_weight=0.05 if with_rla else 0.0, latent_mse_weight=0.05 if with_rla else 0.0)
        return self.train_model("bc_rla" if with_rla else "bc", BCResNetPolicy(conf), loss, ds)

    def train_token_bc(self) -> dict:
        from rla_pipeline.models.policy import TokenPolicy, TokenPolicyConfig
        from rla_pipeline.rl.bc import TokenBCLoss, TokenChunkDataset

        toks = self.data.tokens()
        acts = [self.data.cache.steps(e)["action"] for e in self.data.ids]
        N, D = toks[0].shape[1:]
        conf = TokenPolicyConfig.from_dict({**self.sz.token_policy, "num_tokens": int(N), "token_dim": int(D),
                                            "action_dim": 4, "num_tasks": 1, "task_names": [TASK]})
        ds = TokenChunkDataset(toks, acts, [0] * len(toks), conf.chunk, 4)
        return self.train_model("token_bc", TokenPolicy(conf), TokenBCLoss(), ds)

    def train_pixel_decoder(self) -> dict:
        from rla_pipeline.models.pixel_decoder import pixel_decoder_loss
        from rla_pipeline.stages.pixel_decoder import TokenFrameDataset, build_pixel_decoder

        d = self.data
        ds = TokenFrameDataset(d.cache, d.store, d.ids, int(self.sz.pixel_decoder["image_size"]))
        model = build_pixel_decoder(d.cache, ds, {"model": self.sz.pixel_decoder, "stats_max_frames": d.num_frames})
        return self.train_model("pixel_decoder", model, pixel_decoder_loss, ds)

    def ppo(self) -> dict:
        from rla_pipeline.rl.imagined_env import ImaginedEnvConfig, ImaginedVectorEnv, build_start_states
        from rla_pipeline.rl.ppo import PPOConfig, train_ppo

        wm, policy = self.models.get("rla_wm"), self.models.get("token_bc")
        if wm is None or policy is None:
            raise RuntimeError("needs RLA-WM and the token-BC policy, and one of them failed")
        chunk = policy.config.chunk
        env_cfg = ImaginedEnvConfig.from_dict(self.sz.env)
        starts = build_start_states(self.data.tokens(), chunk, env_cfg.max_chunks, [0, 0], self.data.ids)
        env = ImaginedVectorEnv(wm.to(self.device).eval(), starts, cfg=env_cfg, device=self.device)
        S = self.sz.ppo["num_steps"]
        cfg = PPOConfig.from_dict({**self.sz.ppo, "total_env_steps": env.num_envs * S, "critic_warmup_updates": 0,
                                   "device": str(self.device)})
        t0 = time.perf_counter()
        result = train_ppo(policy, env, cfg, run_name=f"{self.run_prefix}.ppo")
        dt = time.perf_counter() - t0
        wm.cpu()
        return {"step_s": dt, "detail": f"1 iteration: {env.num_envs} envs x {S} chunks of {chunk} "
                                        f"({len(result.history)} update), {wm.config.sample_steps} Euler steps/chunk"}

    def ddp(self) -> dict:
        import torch

        from rla_pipeline.models.rla import rla_loss
        from rla_pipeline.training.trainer import train

        n = torch.cuda.device_count() if self.device.type == "cuda" else 2
        if self.ddp_single:
            n = 1
        if n < 2:
            return self.ddp_one_rank()
        model, ds = self.rla_model()
        out = self.tmp / "ddp_clock.json"
        bs = max(n, (min(self.sz.batch_size, len(ds)) // n) * n)
        cfg = timing_trainer_config(f"{self.run_prefix}.ddp", self.steps, bs, str(self.device), num_processes=n)
        train(model, rla_loss, ds, None, cfg, callbacks=[StepClock(str(out))])
        s = json.loads(out.read_text())
        d = s["dist"]
        if d.get("world_size") != n:
            raise RuntimeError(f"expected a process group of {n}, rank 0 saw {d or 'none'}")
        return {"step_s": s["step_s"], "memory_mib": s["memory_mib"], "memory_from_worker": True,
                "detail": f"RLA trainer, {d['backend']} x {d['world_size']} processes, global batch {bs}"}

    def ddp_one_rank(self) -> dict:
        """One visible GPU: the trainer only builds a process group for >= 2 processes, so here a 1-rank NCCL
        group is made directly (NCCL loads, the communicator starts, DDP's all-reduce runs in backward) around
        the RLA at paper width. gloo on the CPU (``ddp_single``)."""
        import torch
        import torch.distributed as dist
        from torch.utils.data import DataLoader

        from rla_pipeline.models.rla import rla_loss
        from rla_pipeline.training.distributed import backend_for

        model, ds = self.rla_model()
        model.to(self.device)
        backend = backend_for(self.device)
        store = dist.FileStore(str(self.tmp / "one_rank_store"), 1)
        # a bare "cuda" is refused as device_id ("Please use a device_id with index", torch 2.11 on an H200)
        dev = torch.device("cuda", self.device.index or 0) if self.device.type == "cuda" else self.device
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, store=store, rank=0, world_size=1, **kw)
        try:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            bs = min(self.sz.batch_size, len(ds))
            loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True)
            # cycle: at paper h ranges two 40-frame episodes give fewer batches than the steps (StopIteration, seen)
            batches = (b for _ in range(self.steps) for b in loader)
            times = []
            for _ in range(self.steps):
                batch = {k: v.to(self.device) for k, v in next(batches).items() if isinstance(v, torch.Tensor)}
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    loss, _ = rla_loss(ddp_model, batch)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter())
            world = dist.get_world_size()
        finally:
            dist.destroy_process_group()
        st = [b - a for a, b in zip(times, times[1:])]
        return {"step_s": statistics.median(st) if st else float("nan"),
                "detail": f"1 device: {backend} x {world} process group + DDP wrapper (not the trainer's launcher, "
                          f"which needs >= 2 processes), batch {bs}"}

    def stage_functions(self) -> dict:
        """stage name -> the function that runs it, in STAGES order."""
        fns = {"features": self.features, "train.rla": self.train_rla}
        fns.update({f"train.{k}": (lambda k=k: self.train_world_model(k))
                    for k in ("rla_wm", "deterministic", "absolute_flow")})
        fns.update({"train.bc": lambda: self.train_bc(False), "train.bc_rla": lambda: self.train_bc(True),
                    "train.token_bc": self.train_token_bc, "train.pixel_decoder": self.train_pixel_decoder,
                    "ppo": self.ppo, "ddp": self.ddp})
        return fns

    def run(self, stages: set[str] | None = None) -> None:
        """features, then every stage in ``stages`` (None: all) in STAGES order; nothing more without features."""
        fns = self.stage_functions()
        self.stage("features", fns["features"])
        if self.data is None:
            return
        for name in STAGES[1:]:
            if stages is None or name in stages:
                self.stage(name, fns[name])

    def report(self, json_path: str | None = None) -> int:
        """Print the table (and write the rows to ``json_path``); -> 1 if a stage failed, else 0."""
        import platform

        import torch

        dev = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
               else (platform.processor() or platform.machine()))
        mem = "peak GPU memory (MiB)" if self.device.type == "cuda" else "peak RSS so far (MiB)"
        print(f"\nGPU smoke: {dev}, torch {torch.__version__}, {self.sz.labels['scale']}, "
              f"{self.steps} steps per trainer, encoder weights {self.sz.encoder['weights']}\n")
        print(f"| stage | status | step time (s) | {mem} | detail |\n| --- | --- | --- | --- | --- |")
        for r in self.rows:
            print(f"| {r['stage']} | {r['status']} | {r['step_s']:.4g} | {r['memory_mib']:.0f} | {r['detail']} |")
        if json_path:
            Path(json_path).write_text(json.dumps({"device": dev, "scale": self.sz.labels["scale"],
                                                   "rows": self.rows}, indent=1))
        return 1 if any(r["status"] == "FAIL" for r in self.rows) else 0
