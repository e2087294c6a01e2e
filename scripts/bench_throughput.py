"""Where the time goes (issue 12, item 7): one run on this machine, four markdown tables.

(a) every trainer at the small default sizes (conf/base): samples/s through training.trainer.train, and the matmul
    FLOPs of one step (torch.utils.flop_counter: matmuls, convolutions, attention; elementwise ops not counted) per
    second as a share of the fp32 matmul peak measured at the start of the same run;
(b) RLA training samples/s with tokens read from the feature cache against decoding the frames from the episode's
    mp4 and encoding them with the frozen DINO encoder inside every batch (what DINO-WM does);
(c) imagined env steps/s (RLA-WM, all envs in one batched call) against the real ManiSkill simulator (render; render
    + DINO encode of every frame), in simulator-step equivalents (one imagined chunk-step = chunk frames per env);
(d) wall time per node of the latest `wmrl` run in the MLflow tracking store (``node_seconds.*`` metrics of
    MlflowRunHook), or a line saying there is none.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_throughput.py           # make bench (about 10-15 min here)
    .venv/bin/python scripts/bench_throughput.py --quick                     # checks the script (~3 min)

Data: synthetic episodes (128 px, the default ingestion size) encoded with the default encoder
(vit_small_patch14_dinov2 @ 84 px, RANDOM weights: speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_smoke  # noqa: E402  (same folder: the stage code is shared with the smoke run)

ROOT = gpu_smoke.ROOT


def base_params() -> dict:
    import yaml

    out = {}
    for f in sorted((ROOT / "conf" / "base").glob("parameters*.yml")):
        out.update(yaml.safe_load(f.read_text()) or {})
    return out


def base_sizes(quick: bool) -> tuple[gpu_smoke.Sizes, dict]:
    """The small default (conf/base) shapes and trainer batch sizes."""
    p = base_params()
    enc = dict(p["features"]["encoder"])
    enc.update(weights="random", device="cpu")
    batches = {"rla": p["rla"]["trainer"]["batch_size"], "rla_wm": p["world_model"]["trainer"]["batch_size"],
               "deterministic": p["world_model"]["trainer"]["batch_size"],
               "absolute_flow": p["world_model"]["trainer"]["batch_size"],
               "bc": p["actionless_bc"]["trainer"]["batch_size"], "bc_rla": p["actionless_bc"]["trainer"]["batch_size"],
               "token_bc": p["rl"]["bc_trainer"]["batch_size"]}
    wm = {**p["world_model"]["model"]}
    sz = gpu_smoke.Sizes(
        encoder=enc, frames=24 if quick else 48, frame_size=128, batch_size=max(batches.values()),
        rla_samples=dict(p["rla"]["samples"]), wm_samples=dict(p["world_model"]["samples"]),
        rla_model={k: v for k, v in p["rla"]["model"].items()}, wm_model=wm,
        bc_policy={k: v for k, v in p["actionless_bc"]["policy"].items() if k != "proprio_dim"},
        token_policy=dict(p["rl"]["token_policy"]), env=dict(p["rl"]["env"], success_threshold=1.0),
        ppo=dict(num_steps=p["rl"]["ppo"]["num_steps"]), labels={"scale": "small default (conf/base)"},
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


class Bench(gpu_smoke.Smoke):
    """The smoke run's stages at the small default sizes, each trainer also timed for samples/s and FLOPs."""

    def __init__(self, args, sz, batches, tmp: Path):
        super().__init__(Namespace(device="cpu", tiny=False, batch_size=None, weights="random", steps=args.steps, ddp_single=False, stages=None,
                                   json=None))
        shutil.rmtree(self.tmp, ignore_errors=True)  # the smoke run's own temp folder: this one uses ``tmp``
        self.sz, self.batches, self.tmp = sz, batches, tmp
        self.rows_a: list[dict] = []

    def _train(self, run, model, loss_fn, ds, **kw):
        from rla_pipeline.training.trainer import train

        bs = min(self.batches[run], len(ds))
        flops = step_flops(model, loss_fn, ds, bs)
        clock = gpu_smoke.StepClock()
        cfg = gpu_smoke.trainer_config(f"bench.{run}", self.args.steps, bs, "cpu", **kw)
        cfg.amp = "off"  # the CPU default (amp: auto = off on the CPU)
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


def section_d(uri: str | None) -> str:
    """Per-node wall time of the latest wmrl run in the tracking store."""
    from rla_pipeline.hooks import tracking_uri

    uri = uri or tracking_uri()
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps and small data: checks that the script works")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per trainer (default 30, quick 4)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--tracking-uri", default=None, help="MLflow store for (d) (default: the project's, as kedro run)")
    ap.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    ap.add_argument("--skip-sim", action="store_true", help="(c) without the ManiSkill simulator")
    args = ap.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 30)
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    out: dict = {"quick": args.quick, "threads": args.threads, "load_avg_1m_start": load}

    # ---- peak
    peak = matmul_peak(1024 if args.quick else 2048, 2.0 if args.quick else 8.0)
    out["matmul_peak_gflops"] = peak
    print(f"# fp32 matmul peak: {peak:.0f} GFLOP/s", file=sys.stderr, flush=True)

    # ---- (a) trainers
    sz, batches = base_sizes(args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    bench = Bench(args, sz, batches, tmp)
    bench.stage("features", bench.features)
    bench.stage("train.rla", bench.train_rla)
    for kind in ("rla_wm", "deterministic", "absolute_flow"):
        bench.stage(f"train.{kind}", lambda k=kind: bench.train_world_model(k))
    bench.stage("train.bc", lambda: bench.train_bc(False))
    bench.stage("train.bc_rla", lambda: bench.train_bc(True))
    bench.stage("train.token_bc", bench.train_token_bc)
    failed = [r for r in bench.rows if r["status"] != "ok"]
    for r in failed:
        print(f"# FAILED {r['stage']}: {r['detail']}", file=sys.stderr)
    out["trainers"] = bench.rows_a
    print("# (a) done", file=sys.stderr, flush=True)

    # ---- (b) cache vs on the fly (RLA trainer, same samples, same batch)
    from rla_pipeline.models.registry import build_model
    from rla_pipeline.models.rla import rla_loss
    from rla_pipeline.training.trainer import train

    data = bench.data
    pairs = bench._pairs(sz.rla_samples)
    bs = min(batches["rla"], len(pairs))
    fly_ds, fly_loss = FramesOnTheFly(pairs, data.store), EncodeThenRLALoss(data.encoder)
    # data path alone: batches delivered to the model (the on-the-fly path includes encoding its 2B frames)
    b_data = {"feature cache (tokens memory-mapped)": data_rate(pairs, bs, None, 2.0 if args.quick else 5.0),
              "decode mp4 + DINO encode every batch": data_rate(fly_ds, bs, data.encoder, 0.0 if args.quick else 5.0)}
    out["cache_vs_fly_data_only"] = b_data
    b_rows = {}
    for name, ds, loss_fn, steps in (
        ("feature cache (tokens memory-mapped)", pairs, rla_loss, args.steps),
        ("decode mp4 + DINO encode every batch", fly_ds, fly_loss, 3 if args.quick else 6),
    ):
        model = build_model("ResidualLatentActionAutoencoder",
                            {"num_tokens": pairs.num_tokens, "token_dim": pairs.token_dim, **sz.rla_model})
        clock = gpu_smoke.StepClock()
        cfg = gpu_smoke.trainer_config("bench.cache_vs_fly", steps, bs, "cpu")
        cfg.amp = "off"
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
        im = imagined_steps_per_second(env, torch.zeros(env.num_envs, chunk, 4), n_calls=2 if args.quick else 5)
        c_rows.append({"loop": f"imagined env: RLA-WM, {env.num_envs} envs in one call, chunk {chunk}, "
                               f"{wm.config.sample_steps} Euler steps", "sim_steps_per_s": im["frames_per_s"]})
    if not args.skip_sim:
        try:
            from rla_pipeline.rl.sim_eval import SimEvalConfig, sim_steps_per_second

            scfg = SimEvalConfig(image_size=128)
            n = 5 if args.quick else 20
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
    d_text = section_d(args.tracking_uri)
    out["wmrl_timings"] = d_text

    # ---- print
    wall = time.perf_counter() - t_start
    load_end = os.getloadavg()[0]
    out.update(wall_s=wall, load_avg_1m_end=load_end)
    print(f"\nbench_throughput{' --quick' if args.quick else ''}: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {args.threads}, torch {torch.__version__}, load average {load:.1f} at start / "
          f"{load_end:.1f} at end, {wall:.0f} s in all; fp32 matmul peak "
          f"({1024 if args.quick else 2048}^2) measured in this run: {peak:.0f} GFLOP/s\n")
    print(f"(a) trainers at the small default sizes, {args.steps} steps each, fp32, median step after the first\n")
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
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
