"""GPU smoke run (issue 12, item 4): every paper-scale stage for a few steps on this machine's accelerator.

Stages, each through the project's own code (no copies of it):
  features       two synthetic episodes -> FeatureCache.update with the paper's encoder (DINOv3 ViT-L/16 at 512 px,
                 RANDOM weights: labelled as such, there is no hub access; a weights file can be given)
  train.*        a few optimisation steps of every trainer at paper width (conf/paper) with bf16 autocast, through
                 training.trainer.train: RLA, RLA-WM, the two world-model baselines, BC-ResNet, BC+RLA, token BC,
                 the pixel decoder (tokens -> RGB UNet half)
  ppo            one imagined PPO iteration (rl.ppo.train_ppo in rl.imagined_env.ImaginedVectorEnv over RLA-WM)
  ddp            the RLA trainer with TrainerConfig.num_processes = all visible GPUs (NCCL; gloo and 2 processes on
                 the CPU), i.e. training.distributed.launch_local (torchrun's engine); with ONE visible GPU the
                 trainer does not start a process group, so a 1-rank NCCL group + DDP wrapper is run directly
Prints a table: stage, status, step time (median over the steps after the first), peak memory, detail.
A failing stage is reported (status FAIL + the error) and the others still run; the exit code is 1 if any failed.

    python scripts/gpu_smoke.py                       # CUDA, paper widths (make gpu-smoke)
    python scripts/gpu_smoke.py --device cpu --tiny   # the same code at tiny sizes on the CPU (tests/scripts)
    python scripts/gpu_smoke.py --json out.json       # also write the rows as JSON

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per stage (the DDP row: rank 0's device); on the CPU the
process's peak RSS so far (ru_maxrss, monotonic; the DDP row: rank 0's worker process).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONF = ROOT / "conf" / "paper"
TASK = "SyntheticPush-v0"


# ------------------------------------------------------------------------------------------------ sizes
def paper_params() -> dict:
    """The parameters of ``--env=paper`` as Kedro resolves them: conf/base soft-merged with conf/paper (which holds
    only what differs from base, so reading conf/paper alone misses keys)."""
    from kedro.config import OmegaConfigLoader

    from rla_pipeline.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(str(PAPER_CONF.parent), env="paper", **CONFIG_LOADER_ARGS)["parameters"]


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


def sizes(tiny: bool, batch_size: int | None, weights: str) -> Sizes:
    p = paper_params()
    if tiny:
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


def trainer_config(run_name: str, steps: int, batch_size: int, device: str, **kw):
    from rla_pipeline.training.trainer import TrainerConfig

    # val_every=1 without a val set: the callbacks run after every step (that is how StepClock sees each step).
    return TrainerConfig(run_name=run_name, max_steps=steps, batch_size=batch_size, lr=1e-4, warmup_steps=0,
                         schedule="constant", amp="bf16", log_every=1, val_every=1, checkpoint_every=10**9,
                         checkpoint_dir=None, device=device, progress=False, **kw)


# ------------------------------------------------------------------------------------------------ data
class Data:
    """Two synthetic episodes, their feature cache (the paper's encoder) and the datasets every trainer reads."""

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
        self.encoder = DinoEncoder(EncoderConfig.from_dict({**sz.encoder, "device": device}))
        self.cache = FeatureCache(root / "cache")
        t0 = time.perf_counter()
        self.cache.update(self.store, self.encoder, self.ids, FeatureCacheConfig(progress=False))
        self.encode_s = time.perf_counter() - t0  # decode + encode + write, without building the encoder

    def tokens(self):
        return [self.cache.tokens(e) for e in self.ids]


# ------------------------------------------------------------------------------------------------ stages
class Smoke:
    def __init__(self, args):
        import torch

        self.args = args
        self.device = torch.device(args.device)
        self.sz = sizes(args.tiny, args.batch_size, args.weights)
        if args.frames:
            self.sz.frames = args.frames
        self.rows: list[dict] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
        self.data: Data | None = None
        self.models: dict = {}

    # --- bookkeeping ---
    def stage(self, name: str, fn) -> None:
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

    def _train(self, run: str, model, loss_fn, ds, **kw) -> dict:
        from rla_pipeline.training.trainer import train

        clock = StepClock()
        cfg = trainer_config(f"smoke.{run}", self.args.steps, min(self.sz.batch_size, len(ds)), str(self.device), **kw)
        result = train(model, loss_fn, ds, None, cfg, callbacks=[clock])
        loss = float(result.history.loc[result.history["split"] == "train", "loss"].iloc[-1])
        n_params = sum(p.numel() for p in model.parameters())
        self.models[run] = result.model
        s = clock.summary()
        return {"step_s": s["step_s"], "detail": f"{n_params / 1e6:.1f}M params, batch {cfg.batch_size}, "
                                                 f"bf16, last loss {loss:.3g}"}

    # --- the stages ---
    def features(self) -> dict:
        self.data = Data(self.tmp, self.sz, str(self.device))
        enc = self.data.encoder
        n = sum(self.data.cache.tokens(e).shape[0] for e in self.data.ids)
        # "step" = one encoder batch of the cache fill (decode + encode + write, averaged over the batches)
        return {"step_s": self.data.encode_s / max(1, enc.calls), "detail": (
            f"{enc.cfg.model_name} @ {enc.cfg.image_size}px = {enc.num_tokens} tokens x {enc.token_dim}, "
            f"weights {enc.weights_tag}{' (NOT DINO features)' if enc.weights_tag == 'random-init' else ''}, "
            f"{n} frames in {enc.calls} batches")}

    def _pairs(self, samples: dict):
        from rla_pipeline.features.samples import SampleConfig, TokenPairDataset

        return TokenPairDataset(self.data.cache, self.data.index, self.data.ids, SampleConfig.from_dict(samples))

    def _token_stats(self):
        import numpy as np
        import torch

        from rla_pipeline.models.rla import token_stats

        return token_stats(torch.from_numpy(np.concatenate([np.asarray(t, np.float32) for t in self.data.tokens()])))

    def train_rla(self) -> dict:
        from rla_pipeline.models.registry import build_model
        from rla_pipeline.models.rla import rla_loss

        ds = self._pairs(self.sz.rla_samples)
        model = build_model("ResidualLatentActionAutoencoder",
                            {"num_tokens": ds.num_tokens, "token_dim": ds.token_dim, **self.sz.rla_model})
        model.set_token_stats(*self._token_stats())
        return self._train("rla", model, rla_loss, ds)

    def train_world_model(self, kind: str) -> dict:
        from rla_pipeline.features.samples import action_stats
        from rla_pipeline.models.world_model import WORLD_MODELS, WorldModelConfig, world_model_loss

        ds = self._pairs(self.sz.wm_samples)
        rla = self.models.get("rla") if kind == "rla_wm" else None
        if kind == "rla_wm" and rla is None:
            raise RuntimeError("needs the RLA from train.rla, which failed")
        cfg = WorldModelConfig.from_dict({
            "num_tokens": ds.num_tokens, "token_dim": ds.token_dim, "action_dim": ds.action_dim,
            "max_actions": self.sz.wm_samples["h_max"], **self.sz.wm_model,
            **({"rla": rla.config} if rla is not None else {}),
        })
        model = WORLD_MODELS[kind](cfg, rla=rla) if rla is not None else WORLD_MODELS[kind](cfg)
        if rla is None:
            model.set_stats(*self._token_stats())
        a = action_stats(self.data.cache, self.data.ids, "action", ds.action_dim)
        model.set_stats(action_mean=a["mean"], action_std=a["std"])
        return self._train(kind, model, world_model_loss, ds)

    def _image_episodes(self, with_z: bool):
        import torch

        from rla_pipeline.episodes.format import episode_actions
        from rla_pipeline.rl.bc import resize_frames

        size, chunk = self.sz.bc_policy["image_size"], self.sz.bc_policy["chunk"]
        rla = self.models.get("rla")
        eps = []
        for i, eid in enumerate(self.data.ids):
            ep = {"frames": resize_frames(self.data.store.read_frames(eid), size), "task": 0,
                  "actions": episode_actions(self.data.store.read_steps(eid))}
            if with_z:
                # rl.bc.latent_targets runs on the CPU only (inputs are not moved to the model's device); at paper
                # width that is minutes of CPU time, so the targets are computed here on the smoke device.
                tok = torch.from_numpy(self.data.cache.tokens(eid).astype("float32"))
                nxt = torch.clamp(torch.arange(len(tok)) + chunk, max=len(tok) - 1)
                m = rla.to(self.device).eval()
                with torch.no_grad():
                    ep["z"] = torch.cat([m.encode(tok[j:j + 16].to(self.device), tok[nxt[j:j + 16]].to(self.device)).float().cpu()
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
        ds = ImageChunkDataset(self._image_episodes(with_rla), conf.chunk, 4, latent_shape=latent)
        loss = BCLoss(latent_l1_weight=0.05 if with_rla else 0.0, latent_mse_weight=0.05 if with_rla else 0.0)
        return self._train("bc_rla" if with_rla else "bc", BCResNetPolicy(conf), loss, ds)

    def train_token_bc(self) -> dict:
        from rla_pipeline.models.policy import TokenPolicy, TokenPolicyConfig
        from rla_pipeline.rl.bc import TokenBCLoss, TokenChunkDataset

        toks = self.data.tokens()
        acts = [self.data.cache.steps(e)["action"] for e in self.data.ids]
        N, D = toks[0].shape[1:]
        conf = TokenPolicyConfig.from_dict({**self.sz.token_policy, "num_tokens": int(N), "token_dim": int(D),
                                            "action_dim": 4, "num_tasks": 1, "task_names": [TASK]})
        ds = TokenChunkDataset(toks, acts, [0] * len(toks), conf.chunk, 4)
        return self._train("token_bc", TokenPolicy(conf), TokenBCLoss(), ds)

    def train_pixel_decoder(self) -> dict:
        from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig, pixel_decoder_loss
        from rla_pipeline.stages.pixel_decoder import TokenFrameDataset

        d = self.data
        ds = TokenFrameDataset(d.cache, d.store, d.ids, int(self.sz.pixel_decoder["image_size"]))
        conf = PixelDecoderConfig.from_dict({**self.sz.pixel_decoder, "num_tokens": ds.num_tokens,
                                             "token_dim": ds.token_dim})
        return self._train("pixel_decoder", PixelDecoder(conf), pixel_decoder_loss, ds)

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
        result = train_ppo(policy, env, cfg, run_name="smoke.ppo")
        dt = time.perf_counter() - t0
        wm.cpu()
        return {"step_s": dt, "detail": f"1 iteration: {env.num_envs} envs x {S} chunks of {chunk} "
                                        f"({len(result.history)} update), {wm.config.sample_steps} Euler steps/chunk"}

    def ddp(self) -> dict:
        import torch

        from rla_pipeline.models.registry import build_model
        from rla_pipeline.models.rla import rla_loss
        from rla_pipeline.training.trainer import train

        n = torch.cuda.device_count() if self.device.type == "cuda" else 2
        if self.args.ddp_single:
            n = 1
        if n < 2:
            return self.ddp_one_rank()
        ds = self._pairs(self.sz.rla_samples)
        model = build_model("ResidualLatentActionAutoencoder",
                            {"num_tokens": ds.num_tokens, "token_dim": ds.token_dim, **self.sz.rla_model})
        model.set_token_stats(*self._token_stats())
        out = self.tmp / "ddp_clock.json"
        bs = max(n, (min(self.sz.batch_size, len(ds)) // n) * n)
        cfg = trainer_config("smoke.ddp", self.args.steps, bs, str(self.device), num_processes=n)
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
        the RLA at paper width. gloo on the CPU (``--ddp-single``)."""
        import torch
        import torch.distributed as dist
        from torch.utils.data import DataLoader

        from rla_pipeline.models.registry import build_model
        from rla_pipeline.models.rla import rla_loss
        from rla_pipeline.training.distributed import backend_for

        ds = self._pairs(self.sz.rla_samples)
        model = build_model("ResidualLatentActionAutoencoder",
                            {"num_tokens": ds.num_tokens, "token_dim": ds.token_dim, **self.sz.rla_model})
        model.set_token_stats(*self._token_stats())
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
            # cycle: at paper h ranges two 40-frame episodes give fewer batches than --steps (StopIteration, seen)
            batches = (b for _ in range(self.args.steps) for b in loader)
            times = []
            for _ in range(self.args.steps):
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

    def run(self) -> int:
        import torch

        print(f"[smoke] device {self.device}, {self.sz.labels['scale']}, tmp {self.tmp}", file=sys.stderr)
        self.stage("features", self.features)
        if self.data is None:
            return self.report()
        stages = [("train.rla", self.train_rla)]
        stages += [(f"train.{k}", lambda k=k: self.train_world_model(k)) for k in ("rla_wm", "deterministic", "absolute_flow")]
        stages += [("train.bc", lambda: self.train_bc(False)), ("train.bc_rla", lambda: self.train_bc(True)),
                   ("train.token_bc", self.train_token_bc), ("train.pixel_decoder", self.train_pixel_decoder),
                   ("ppo", self.ppo), ("ddp", self.ddp)]
        for name, fn in stages:
            if self.args.stages is None or name in self.args.stages:
                self.stage(name, fn)
        del torch
        return self.report()

    def report(self) -> int:
        import platform

        import torch

        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else (platform.processor() or platform.machine())
        mem = "peak GPU memory (MiB)" if self.device.type == "cuda" else "peak RSS so far (MiB)"
        print(f"\nGPU smoke: {dev}, torch {torch.__version__}, {self.sz.labels['scale']}, "
              f"{self.args.steps} steps per trainer, encoder weights {self.sz.encoder['weights']}\n")
        print(f"| stage | status | step time (s) | {mem} | detail |\n| --- | --- | --- | --- | --- |")
        for r in self.rows:
            print(f"| {r['stage']} | {r['status']} | {r['step_s']:.4g} | {r['memory_mib']:.0f} | {r['detail']} |")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({"device": dev, "scale": self.sz.labels["scale"],
                                                        "rows": self.rows}, indent=1))
        return 1 if any(r["status"] == "FAIL" for r in self.rows) else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (for checking the script on a CPU)")
    ap.add_argument("--steps", type=int, default=5, help="optimisation steps per trainer (>= 2 for a step time)")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch per trainer (paper mode default 16)")
    ap.add_argument("--weights", default="random",
                    help="encoder weights at paper scale: random (default, labelled) | /path/to/model.safetensors")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per synthetic episode (paper mode 40; more pairs for paper batch sizes)")
    ap.add_argument("--json", default=None, help="also write the table rows to this JSON file")
    ap.add_argument("--ddp-single", action="store_true",
                    help="the one-device DDP path (what a 1-GPU machine runs) instead of the trainer's 2-process one")
    ap.add_argument("--stages", default=None,
                    help="comma-separated subset, e.g. ddp or train.rla,train.rla_wm (features always run; stages "
                         "that need an earlier one's model fail without it)")
    args = ap.parse_args(argv)
    args.stages = None if args.stages is None else set(args.stages.split(","))
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_smoke: CUDA is not available here; use --device cpu --tiny to check the script", file=sys.stderr)
        return 2
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    smoke = Smoke(args)
    try:
        return smoke.run()
    finally:
        shutil.rmtree(smoke.tmp, ignore_errors=True)  # paper scale: ~0.3 GB of episodes and tokens


if __name__ == "__main__":
    sys.exit(main())
