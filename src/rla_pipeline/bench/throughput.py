"""Where the time goes (issue 12, item 7): one run on this machine, four markdown tables (see
``scripts/bench_throughput.py``, which parses the arguments and calls :func:`run`).

(a) every trainer at the small default sizes (conf/base) through the smoke run's stages (``bench.smoke``):
    samples/s through training.trainer.train and the matmul FLOPs of one step per second as a share of the fp32
    matmul peak measured at the start of the same run; (b) RLA training samples/s, cached tokens against decoding +
    encoding the frames every batch; (c) imagined env steps/s against the real ManiSkill simulator; (d) wall time
    per node of the latest ``wmrl`` run in an MLflow tracking store. No Kedro here.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rla_pipeline.bench.smoke import Sizes, Smoke, StepClock, timing_trainer_config

# the trainers part (a) times, in the smoke run's order
TRAINER_STAGES = ("train.rla", "train.rla_wm", "train.deterministic", "train.absolute_flow", "train.bc",
                  "train.bc_rla", "train.token_bc")


def base_sizes(p: dict, quick: bool) -> tuple[Sizes, dict]:
    """The small default shapes and trainer batch sizes from ``p``, the conf/base parameters."""
    enc = dict(p["features"]["encoder"])
    enc.update(weights="random", device="cpu")
    batches = {"rla": p["rla"]["trainer"]["batch_size"], "rla_wm": p["world_model"]["trainer"]["batch_size"],
               "deterministic": p["world_model"]["trainer"]["batch_size"],
               "absolute_flow": p["world_model"]["trainer"]["batch_size"],
               "bc": p["actionless_bc"]["trainer"]["batch_size"], "bc_rla": p["actionless_bc"]["trainer"]["batch_size"],
               "token_bc": p["rl"]["bc_trainer"]["batch_size"]}
    wm = {**p["world_model"]["model"]}
    sz = Sizes(
        encoder=enc, frames=24 if quick else 48, frame_size=128, batch_size=max(batches.values()),
        rla_samples=dict(p["rla"]["samples"]), wm_samples=dict(p["world_model"]["samples"]),
        rla_model={k: v for k, v in p["rla"]["model"].items()}, wm_model=wm,
        bc_policy={k: v for k, v in p["actionless_bc"]["policy"].items() if k != "proprio_dim"},
        token_policy=dict(p["rl"]["token_policy"]), env=dict(p["rl"]["env"], success_threshold=1.0),
        ppo=dict(num_steps=p["rl"]["ppo"]["num_steps"]), pixel_decoder={},
        labels={"scale": "small default (conf/base)"},
    )
    return sz, batches


def matmul_peak(n: int, seconds: float) -> float:
    """Best fp32 GFLOP/s of an n x n matmul over ``seconds`` of repeats (the machine's practical peak here)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def step_flops(model, loss_fn, ds, batch_size: int) -> float:
    """Matmul/conv/attention FLOPs of one training step (forward + backward) on one batch."""
    import torch
    from torch.utils.data import default_collate
    from torch.utils.flop_counter import FlopCounterMode

    batch = default_collate([ds[i] for i in range(batch_size)])
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = loss_fn(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    del torch
    return float(counter.get_total_flops())


class ThroughputBench(Smoke):
    """The smoke run's stages at the small default sizes on the CPU, each trainer also timed for samples/s and
    FLOPs (``rows_a``), fp32, at its own configured batch size (``batches``)."""

    run_prefix = "bench"

    def __init__(self, sz: Sizes, batches: dict, steps: int, tmp: Path):
        super().__init__(sz, "cpu", steps, tmp)
        self.batches = batches
        self.rows_a: list[dict] = []

    def train_model(self, run, model, loss_fn, ds, **kw):
        from rla_pipeline.training.trainer import train

        bs = min(self.batches[run], len(ds))
        flops = step_flops(model, loss_fn, ds, bs)
        clock = StepClock()
        # fp32: the CPU default (amp: auto = off on the CPU)
        cfg = timing_trainer_config(f"{self.run_prefix}.{run}", self.steps, bs, "cpu", amp="off", **kw)
        result = train(model, loss_fn, ds, None, cfg, callbacks=[clock])
        self.models[run] = result.model
        st = clock.step_times()[1:] or clock.step_times()  # the first timed step still warms up
        step_s = statistics.median(st)
        self.rows_a.append({"trainer": run, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                            "batch": bs, "step_s": step_s, "samples_per_s": bs / step_s,
                            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / step_s / 1e9})
        return {"step_s": step_s}


def data_rate(ds, batch_size: int, encoder, seconds: float) -> float:
    """Samples/s of a DataLoader over ``ds`` (shuffled, in-process) for about ``seconds`` (at least two batches;
    the first is not timed); with ``encoder``, each batch's frames are encoded too, as the on-the-fly loss does."""
    import torch
    from torch.utils.data import DataLoader

    def epochs():  # as many epochs as the time needs (small --quick datasets hold only a batch or two)
        gen = torch.Generator().manual_seed(0)
        while True:
            yield from DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen)

    loader = epochs()
    loss = EncodeThenRLALoss(encoder) if encoder is not None else None

    def one():
        batch = next(loader)
        if loss is not None:
            loss.tokens(batch)

    one()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        one()
        n += 1
    return n * batch_size / (time.perf_counter() - t0)


class FramesOnTheFly:
    """The samples of a TokenPairDataset (same t, h, actions), but with the two RGB frames decoded from the episode's
    mp4 for every sample (decoding stops at frame t+h; mp4 frames decode in order from the keyframe) instead of the
    cached tokens. The encoder then runs inside the loss, on the whole batch, as in DINO-WM."""

    def __init__(self, pairs, store):
        self.pairs, self.store = pairs, store
        self.fingerprint = "on-the-fly-" + pairs.fingerprint
        self._masks: dict = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        import numpy as np
        import torch

        ep, t = self.pairs.locate(index)
        eid, h = self.pairs.episode_ids[ep], self.pairs.horizon(index)
        got, frames = 0, []
        for batch in self.store.iter_frame_batches(eid, batch=8):
            frames.append(batch)
            got += len(batch)
            if got > t + h:
                break
        frames = np.concatenate(frames)
        masks = self.store.read_masks(eid)
        item = {k: v for k, v in self.pairs[index].items() if k not in ("s_t", "s_th")}
        item["frame_t"], item["frame_th"] = torch.from_numpy(frames[t].copy()), torch.from_numpy(frames[t + h].copy())
        if masks is not None:
            item["mask_t"], item["mask_th"] = torch.from_numpy(masks[t].copy()), torch.from_numpy(masks[t + h].copy())
        return item


class EncodeThenRLALoss:
    """loss_fn for FramesOnTheFly: frozen DINO encoder on the batch's 2B frames, then the RLA loss."""

    def __init__(self, encoder):
        self.encoder = encoder

    def tokens(self, batch):
        import torch

        frames = torch.cat([batch["frame_t"], batch["frame_th"]])
        masks = torch.cat([batch["mask_t"], batch["mask_th"]]) if "mask_t" in batch else None
        tok = self.encoder.encode(frames.cpu(), None if masks is None else masks.cpu()).clone()  # leave inference mode
        B = batch["frame_t"].shape[0]
        return tok[:B], tok[B:]

    def __call__(self, model, batch):
        from rla_pipeline.models.rla import rla_loss

        s_t, s_th = self.tokens(batch)
        return rla_loss(model, {"s_t": s_t, "s_th": s_th})


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def section_d(uri: str) -> str:
    """Per-node wall time of the latest wmrl run in the tracking store at ``uri``."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return f"No tracking store at {uri} (no `kedro run` has logged here): no `wmrl` timings to show."
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps], "tags.`kedro.pipelines` = 'wmrl'",
                              order_by=["attributes.start_time DESC"], max_results=20) if exps else []
    runs = [r for r in runs if r.info.status == "FINISHED"] or runs
    if not runs:
        return f"The tracking store {uri} has no `wmrl` run: no per-stage timings to show."
    run = runs[0]
    nodes = {k[len("node_seconds."):]: v for k, v in run.data.metrics.items() if k.startswith("node_seconds.")}
    if not nodes:
        return f"The latest `wmrl` run ({run.info.run_id}, {run.info.status}) logged no node_seconds.* metrics."
    total = sum(nodes.values())
    wall = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else float("nan")
    rows = [[n, f"{s:.1f}", f"{100 * s / total:.0f}%"] for n, s in sorted(nodes.items(), key=lambda kv: -kv[1])]
    rows.append(["**all nodes**", f"{total:.1f}", "100%"])
    head = (f"Latest `wmrl` run {run.info.run_id} ({run.info.status}, env {run.data.tags.get('kedro.env', '?')}, "
            f"commit {run.data.tags.get('git.commit', '?')[:10]}), run wall time "
            f"{wall:.0f} s, store {uri}\n\n")
    return head + table(["node", "seconds", "share"], rows)


def run(params: dict, quick: bool, steps: int, threads: int, tracking_uri: str, json_path: str | None = None,
        skip_sim: bool = False) -> int:
    """The four parts on this machine's CPU; prints the tables, -> 1 if a trainer failed, else 0. ``params``: the
    conf/base parameters; ``tracking_uri``: the MLflow store part (d) reads."""
    import torch

    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    out: dict = {"quick": quick, "threads": threads, "load_avg_1m_start": load}

    # ---- peak
    peak = matmul_peak(1024 if quick else 2048, 2.0 if quick else 8.0)
    out["matmul_peak_gflops"] = peak
    print(f"# fp32 matmul peak: {peak:.0f} GFLOP/s", file=sys.stderr, flush=True)

    # ---- (a) trainers
    sz, batches = base_sizes(params, quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    bench = ThroughputBench(sz, batches, steps, tmp)
    bench.run(set(TRAINER_STAGES))
    failed = [r for r in bench.rows if r["status"] != "ok"]
    for r in failed:
        print(f"# FAILED {r['stage']}: {r['detail']}", file=sys.stderr)
    out["trainers"] = bench.rows_a
    print("# (a) done", file=sys.stderr, flush=True)

    # ---- (b) cache vs on the fly (RLA trainer, same samples, same batch)
    from rla_pipeline.models.rla import rla_loss
    from rla_pipeline.stages.rla import build_rla_model
    from rla_pipeline.training.trainer import train

    data = bench.data
    rla_data, rla_cfg = bench.rla_data()
    pairs = rla_data.train
    bs = min(batches["rla"], len(pairs))
    fly_ds, fly_loss = FramesOnTheFly(pairs, data.store), EncodeThenRLALoss(data.encoder)
    # data path alone: batches delivered to the model (the on-the-fly path includes encoding its 2B frames)
    b_data = {"feature cache (tokens memory-mapped)": data_rate(pairs, bs, None, 2.0 if quick else 5.0),
              "decode mp4 + DINO encode every batch": data_rate(fly_ds, bs, data.encoder, 0.0 if quick else 5.0)}
    out["cache_vs_fly_data_only"] = b_data
    b_rows = {}
    for name, ds, loss_fn, n_steps in (
        ("feature cache (tokens memory-mapped)", pairs, rla_loss, steps),
        ("decode mp4 + DINO encode every batch", fly_ds, fly_loss, 3 if quick else 6),
    ):
        model = build_rla_model(rla_data, rla_cfg)
        clock = StepClock()
        cfg = timing_trainer_config("bench.cache_vs_fly", n_steps, bs, "cpu", amp="off")
        train(model, loss_fn, ds, None, cfg, callbacks=[clock])
        st = clock.step_times()[1:] or clock.step_times()
        b_rows[name] = bs / statistics.median(st)
    out["cache_vs_fly"] = b_rows
    print("# (b) done", file=sys.stderr, flush=True)

    # ---- (c) imagined vs real env
    from rla_pipeline.rl.imagined_env import ImaginedEnvConfig, ImaginedVectorEnv, build_start_states, \
        imagined_steps_per_second

    c_rows = []
    wm = bench.models.get("rla_wm")
    chunk = sz.token_policy["chunk"]
    if wm is not None:
        env_cfg = ImaginedEnvConfig.from_dict(sz.env)
        starts = build_start_states(data.tokens(), chunk, env_cfg.max_chunks, None, data.ids)
        env = ImaginedVectorEnv(wm.eval(), starts, cfg=env_cfg)
        im = imagined_steps_per_second(env, torch.zeros(env.num_envs, chunk, 4), n_calls=2 if quick else 5)
        c_rows.append({"loop": f"imagined env: RLA-WM, {env.num_envs} envs in one call, chunk {chunk}, "
                               f"{wm.config.sample_steps} Euler steps", "sim_steps_per_s": im["frames_per_s"]})
    if not skip_sim:
        try:
            from rla_pipeline.rl.sim_eval import SimEvalConfig, sim_steps_per_second

            scfg = SimEvalConfig(image_size=128)
            n = 5 if quick else 20
            sim = sim_steps_per_second("PushCube-v1", scfg, encoder=data.encoder, n_steps=n)
            c_rows.append({"loop": "ManiSkill PushCube-v1, 1 env, 128 px: physics + render",
                           "sim_steps_per_s": sim["sim_render_steps_per_s"]})
            c_rows.append({"loop": "ManiSkill PushCube-v1: physics + render + DINO encode (what WMRL replaces)",
                           "sim_steps_per_s": sim["sim_render_encode_steps_per_s"]})
        except Exception as err:  # noqa: BLE001 - no Vulkan: say so in the table
            c_rows.append({"loop": f"ManiSkill simulator unavailable: {type(err).__name__}: {err}"[:200],
                           "sim_steps_per_s": float("nan")})
    out["imagined_vs_real"] = c_rows
    print("# (c) done", file=sys.stderr, flush=True)

    # ---- (d)
    d_text = section_d(tracking_uri)
    out["wmrl_timings"] = d_text

    # ---- print
    wall = time.perf_counter() - t_start
    load_end = os.getloadavg()[0]
    out.update(wall_s=wall, load_avg_1m_end=load_end)
    print(f"\nbench_throughput{' --quick' if quick else ''}: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {threads}, torch {torch.__version__}, load average {load:.1f} at start / "
          f"{load_end:.1f} at end, {wall:.0f} s in all; fp32 matmul peak "
          f"({1024 if quick else 2048}^2) measured in this run: {peak:.0f} GFLOP/s\n")
    print(f"(a) trainers at the small default sizes, {steps} steps each, fp32, median step after the first\n")
    print(table(["trainer", "params (M)", "batch", "step (ms)", "samples/s", "GFLOP/step", "GFLOP/s", "% of peak"],
                [[r["trainer"], f"{r['params_m']:.2f}", r["batch"], f"{1000 * r['step_s']:.0f}",
                  fmt(r["samples_per_s"]), fmt(r["gflop_per_step"]), fmt(r["gflop_per_s"]),
                  f"{100 * r['gflop_per_s'] / peak:.1f}%"] for r in bench.rows_a]))
    if failed:
        print("\nFailed: " + "; ".join(f"{r['stage']}: {r['detail']}" for r in failed))
    cache, fly = b_rows.values()
    print(f"\n(b) RLA training samples/s, batch {bs}: cached tokens vs decoding + encoding the frames every batch "
          f"({data.encoder.cfg.model_name} @ {data.encoder.cfg.image_size}px, {data.encoder.num_tokens} tokens)\n")
    fly_data = b_data["decode mp4 + DINO encode every batch"]
    print(table(["data path", "samples/s, data only", "ratio", "samples/s, training (data + RLA step)", "ratio"],
                [[k, fmt(b_data[k]), f"{b_data[k] / fly_data:.0f}x", fmt(v), f"{v / fly:.1f}x"]
                 for k, v in b_rows.items()]))
    print("\nData only: batches the data path hands to the model (on the fly: decode + encode of the batch's 2B "
          "frames). Training: the same plus the RLA optimisation step; its ratio is bounded by how much of a step "
          "the model itself takes.")
    if c_rows:
        ref = c_rows[-1]["sim_steps_per_s"] if len(c_rows) > 1 else float("nan")
        print("\n(c) environment steps/s, in simulator-step equivalents (one imagined chunk-step = "
              f"{chunk} steps per env)\n")
        print(table(["loop", "sim steps/s", "vs render + encode"],
                    [[r["loop"], fmt(r["sim_steps_per_s"]), f"{r['sim_steps_per_s'] / ref:.1f}x"] for r in c_rows]))
    print(f"\n(d) `wmrl` wall time per stage\n\n{d_text}")
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


