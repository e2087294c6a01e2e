"""The evaluation stage: every policy in the real simulator on held-out seeds -> success tables shaped like the
paper's Tables 2 and 3 (with the paper's numbers beside) and the imagined-vs-real speed table. No Kedro here."""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from rla_pipeline.rl.sim_eval import SimEvalConfig
from rla_pipeline.stages.wmrl_env import WMRLConfig, make_imagined_env
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest

logger = logging.getLogger(__name__)


def _paper_table3_tasks() -> tuple[str, ...]:
    from rla_pipeline.evaluation.success import PAPER_TABLE3_TASKS

    return PAPER_TABLE3_TASKS


@dataclass
class EvaluationConfig:
    """``params:evaluation``: n_episodes per (policy, task); seed_offset (eval seeds: seed_offset + 1000 * global
    seed + i; training demos use low seeds); sim (SimEvalConfig; image_size/control_mode null = the training
    episodes' own); speed_steps (simulator steps timed); speed_calls (batched imagined-env calls timed);
    table3_tasks (the tasks Table 3, token BC vs WMRL, is evaluated on, in the table's row order: the paper's
    PokeCube, RollBall, PushT by default; those not among the run's ``tasks`` are skipped; null = every task)."""

    n_episodes: int = 10
    seed_offset: int = 10_000
    sim: SimEvalConfig = field(default_factory=SimEvalConfig)
    speed_steps: int = 20
    speed_calls: int = 5
    table3_tasks: list[str] | None = field(default_factory=lambda: list(_paper_table3_tasks()))

    @classmethod
    def from_dict(cls, d: "dict | EvaluationConfig | None") -> "EvaluationConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="evaluation")


def table3_tasks(cfg: EvaluationConfig, tasks: Sequence[str]) -> list[str]:
    """The run's tasks Table 3 covers: ``cfg.table3_tasks`` (its order) that are among ``tasks``; all of ``tasks``
    when it is null. ValueError when none is left (WMRL would be trained but never evaluated)."""
    if cfg.table3_tasks is None:
        return list(tasks)
    chosen = [t for t in cfg.table3_tasks if t in set(tasks)]
    if not chosen:
        raise ValueError(f"evaluation.table3_tasks {list(cfg.table3_tasks)} shares no task with the run's tasks "
                         f"{list(tasks)}: set it to some of them (or null = all)")
    return chosen


def eval_seeds(cfg: EvaluationConfig, seed: int) -> list[int]:
    return [cfg.seed_offset + 1000 * seed + i for i in range(cfg.n_episodes)]


def sim_config(cfg: EvaluationConfig, index: pd.DataFrame, tasks: Sequence[str]) -> SimEvalConfig:
    """``cfg.sim`` with image size and control mode taken from the training demos where they are null. Step limits
    stay as configured (null: ``sim.envs.TASK_MAX_STEPS``, the demos' own); a task whose longest demo took more
    actions than its evaluation limit is logged as a warning (a policy copying that demo would run out of steps)."""
    sim = cfg.sim
    rows = index[index["task"].isin(list(tasks)) & (index["kind"] == "demo")]
    if "num_frames" in rows:
        for task, frames in rows.groupby("task")["num_frames"].max().items():
            limit = sim.steps_for(str(task))
            if limit is not None and int(frames) - 1 > limit:
                logger.warning("%s: evaluation episodes stop after %d steps, the longest demo took %d actions "
                               "(evaluation.sim.max_steps / task_max_steps)", task, limit, int(frames) - 1)
    image_size = sim.image_size
    if image_size is None:
        image_size = int(rows["height"].iloc[0]) if len(rows) else 128
    control_mode = sim.control_mode
    if control_mode is None:
        if len(rows) and rows["control_mode"].notna().any():
            control_mode = str(rows["control_mode"].dropna().iloc[0])
        else:
            control_mode = SimEvalConfig.__dataclass_fields__["control_mode"].default
    return dataclasses.replace(sim, image_size=image_size, control_mode=control_mode)


def dino_encoder(features_params: dict, feature_cache):
    """The DINO encoder of the feature cache (same config), checked against the cache's weights digest."""
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    enc = DinoEncoder(EncoderConfig.from_dict(features_params["encoder"]))
    digests = set(feature_cache.manifest()["weights_digest"].dropna())
    if digests and enc.weights_digest not in digests:
        raise ValueError("the evaluation DINO encoder's weights differ from the ones the feature cache was built "
                         "with: token policies would see other features than they were trained on")
    return enc


def evaluate_policies_in_sim(policies: dict[str, tuple[str, Any]], tasks: Sequence[str], params,
                             index: pd.DataFrame, seed: int, encoder=None) -> pd.DataFrame:
    """policies: name -> (kind "image"|"token", model). One row per episode (see ``evaluate_in_sim``)."""
    from rla_pipeline.rl.sim_eval import check_disjoint_seeds, evaluate_many_in_sim

    cfg = EvaluationConfig.from_dict(params)
    seeds = eval_seeds(cfg, seed)
    if "seed" in index:
        check_disjoint_seeds(seeds, index["seed"].dropna().astype(int).tolist())
    scfg = sim_config(cfg, index, tasks)
    out = evaluate_many_in_sim(policies, tasks, cfg.n_episodes, seeds, scfg, encoder=encoder)
    out["sim_digest"] = sim_digest(scfg)  # lets Table 3 tell whether Table 2's episodes ran the same simulator
    return out


def sim_digest(scfg: SimEvalConfig) -> str:
    """Digest of the simulator settings that shape an evaluation episode (not ``workers``: same rows), the step
    limits included: the config's own and the table its unset limits come from (``sim.envs.TASK_MAX_STEPS``)."""
    from rla_pipeline.sim.envs import TASK_MAX_STEPS

    d = {k: v for k, v in dataclasses.asdict(scfg).items() if k != "workers"}
    d["default_task_max_steps"] = dict(TASK_MAX_STEPS)
    return json_digest(d, 16)


def same_weights(a, b) -> bool:
    """Whether two torch modules are the same class with bit-identical state dicts."""
    if type(a) is not type(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and sa[k].dtype == sb[k].dtype and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def reusable_bc_rows(start_policy, bc_policy, bc_eval_episodes: pd.DataFrame | None, params, index: pd.DataFrame,
                     tasks: Sequence[str], seed: int) -> tuple[pd.DataFrame | None, str]:
    """Table 2's ``bc`` rows for ``tasks`` when they are exactly the episodes Table 3's baseline would simulate:
    the start policy has ``bc_policy``'s weights, and the rows have this run's evaluation seeds and simulator
    settings for every task. -> (rows or None, why)."""
    if bc_eval_episodes is None or bc_policy is None:
        return None, "no Table 2 episodes given"
    if not same_weights(start_policy, bc_policy):
        return None, "the start policy's weights differ from bc_policy's"
    cfg = EvaluationConfig.from_dict(params)
    seeds = eval_seeds(cfg, seed)
    digest = sim_digest(sim_config(cfg, index, tasks))
    if "sim_digest" not in bc_eval_episodes:
        return None, "Table 2's episodes do not record their simulator settings"
    bc = bc_eval_episodes[(bc_eval_episodes["policy"] == "bc") & bc_eval_episodes["task"].isin(list(tasks))]
    for task in tasks:
        rows = bc[bc["task"] == task]
        if rows["seed"].astype(int).tolist() != seeds:
            return None, f"Table 2's {task} episodes used other seeds"
        if set(rows["sim_digest"]) != {digest}:
            return None, f"Table 2's {task} episodes ran other simulator settings"
    return bc, "same weights, seeds and simulator settings"


def evaluate_bc(bc_policy, bc_rla_policy, episode_index: pd.DataFrame, params: dict, tasks: list[str],
                seed: int) -> pd.DataFrame:
    """BC-ResNet and BC+RLA in the simulator -> bc_eval_episodes (one row per episode)."""
    return evaluate_policies_in_sim({"bc": ("image", bc_policy), "bc_rla": ("image", bc_rla_policy)}, tasks,
                                    params, episode_index, seed)


def check_same_execution(params, rl_params, chunk: int) -> int:
    """The simulator must execute as many actions per chunk as PPO's imagined env did (else WMRL is scored on a
    control loop it was not optimised for). -> that number; ValueError when they differ."""
    from rla_pipeline.rl.sim_eval import executed_actions

    sim = executed_actions(EvaluationConfig.from_dict(params).sim.execute_steps, chunk)
    imagined = executed_actions(WMRLConfig.from_dict(rl_params).env.get("execute_steps"), chunk)
    if sim != imagined:
        raise ValueError(f"evaluation.sim.execute_steps runs {sim} actions per chunk of {chunk} but rl.env.execute_steps"
                         f" ran {imagined} in imagination: set both to the same value (null = the whole chunk)")
    return sim


def wmrl_baseline_name(policy) -> str:
    """Table 3's baseline policy name in the episode frame: "bc" for the BC-ResNet WMRL starts from under
    ``rl.policy`` bc_resnet (Table 2's BC row), "token_bc" for the token policy (``rl.policy`` token)."""
    from rla_pipeline.models.policy import BCResNetPolicy

    return "bc" if isinstance(policy, BCResNetPolicy) else "token_bc"


def evaluate_wmrl(start_policy, wmrl_policy, feature_cache, episode_index: pd.DataFrame, params: dict,
                  features_params: dict, tasks: list[str], seed: int, rl_params: dict | None = None,
                  bc_policy=None, bc_eval_episodes: pd.DataFrame | None = None) -> pd.DataFrame:
    """WMRL's start policy and WMRL in the simulator, same seeds, on Table 3's tasks (:func:`table3_tasks`)
    -> wmrl_eval_episodes (one row per episode).

    BC-ResNet policies (``rl.policy`` bc_resnet) see the rendered RGB frames, token policies DINO-encoded ones.
    ``rl_params``: checked to execute as many actions per chunk as the simulator (see :func:`check_same_execution`).
    ``bc_policy`` / ``bc_eval_episodes`` (Table 2's): under ``rl.policy`` bc_resnet the baseline is that same
    BC-ResNet on the same seeds, so its ``bc`` rows are reused instead of simulated again when
    :func:`reusable_bc_rows` finds them equal by construction (weights, seeds, simulator settings)."""
    from rla_pipeline.models.policy import BCResNetPolicy

    if rl_params is not None:
        check_same_execution(params, rl_params, wmrl_policy.config.chunk)
    if type(start_policy) is not type(wmrl_policy):
        raise TypeError(f"WMRL ({type(wmrl_policy).__name__}) and its start policy ({type(start_policy).__name__}) "
                        "must be the same kind of policy")
    t3 = table3_tasks(EvaluationConfig.from_dict(params), tasks)
    image = isinstance(wmrl_policy, BCResNetPolicy)
    kind = "image" if image else "token"
    encoder = None if image else dino_encoder(features_params, feature_cache)
    base = wmrl_baseline_name(start_policy)
    reused, why = (None, "token start policy") if not image else reusable_bc_rows(
        start_policy, bc_policy, bc_eval_episodes, params, episode_index, t3, seed)
    if reused is None:
        logger.info("Table 3: simulating the %s baseline (%s)", base, why)
        return evaluate_policies_in_sim({base: (kind, start_policy), "wmrl": (kind, wmrl_policy)}, t3, params,
                                        episode_index, seed, encoder=encoder)
    logger.info("Table 3: reusing Table 2's %d bc episodes for the baseline on %s (%s); simulating wmrl only",
                len(reused), t3, why)
    wmrl = evaluate_policies_in_sim({"wmrl": (kind, wmrl_policy)}, t3, params, episode_index, seed, encoder=encoder)
    # the serial layout: per task, the baseline's episodes then WMRL's
    frames = [part[part["task"] == task] for task in t3 for part in (reused, wmrl)]
    return pd.concat(frames, ignore_index=True)[list(wmrl.columns)]


def _log_table(name: str, table: pd.DataFrame, markdown: str, baseline: str, method: str) -> None:
    from rla_pipeline import tracking

    metrics = {}
    for _, r in table.iterrows():
        for pol in (baseline, method):
            metrics[f"{name}/{r['task']}/{pol}_sr"] = r[f"{pol}_sr"]
    tracking.log_metrics(metrics)
    if tracking.active():
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / f"{name}.md"
            p.write_text(markdown)
            tracking.log_artifact(str(p), artifact_path="reporting")


def bc_success_table(bc_eval_episodes: pd.DataFrame):
    """-> (table, markdown): BC vs BC+RLA per task + average, with the paper's Table 2 beside."""
    from rla_pipeline.evaluation.success import PAPER_TABLE2, PAPER_TABLE2_ROBOTS, comparison_table, table_markdown
    from rla_pipeline.sim.envs import TASK_ROBOTS

    t = comparison_table(bc_eval_episodes, "bc", "bc_rla", PAPER_TABLE2, ("BC-ResNet", "+RLA"), paper_table="Table 2",
                         robots=TASK_ROBOTS, paper_robots=PAPER_TABLE2_ROBOTS)
    md = table_markdown(t, "bc", "bc_rla", "Table 2 (ours): BC-ResNet vs BC-ResNet + RLA latent head, real simulator")
    _log_table("bc_success", t, md, "bc", "bc_rla")
    return t, md


def wmrl_success_table(wmrl_eval_episodes: pd.DataFrame, imagined_env_calibration: pd.DataFrame | None = None):
    """-> (table, markdown): WMRL's start policy vs WMRL per task + average, with the paper's Table 3 beside.

    The baseline is whichever start policy the episodes hold: "bc" (BC-ResNet, rl.policy bc_resnet: the paper's
    comparison) or "token_bc" (rl.policy token). ``imagined_env_calibration`` adds the decoding gap
    (``evaluation.success.decoding_gap_columns``) and flags the table when the policy cannot read decoded frames."""
    from rla_pipeline.evaluation.success import (
        PAPER_TABLE3, PAPER_TABLE3_ROBOTS, comparison_table, table_markdown, with_decoding_gap,
    )
    from rla_pipeline.sim.envs import TASK_ROBOTS

    base = "bc" if "bc" in set(wmrl_eval_episodes["policy"]) else "token_bc"
    t = comparison_table(wmrl_eval_episodes, base, "wmrl", PAPER_TABLE3, ("BC-ResNet", "WMRL"),
                         paper_table="Table 3", robots=TASK_ROBOTS, paper_robots=PAPER_TABLE3_ROBOTS)
    if base == "bc":
        title = "Table 3 (ours): BC-ResNet vs WMRL (BC-ResNet improved by PPO inside the world model on decoded RGB)"
        note = "Both rows are the same BC-ResNet architecture, evaluated on rendered frames; WMRL starts from BC."
    else:
        title = "Table 3 (ours): token BC vs WMRL (token policy, PPO inside the world model)"
        note = "rl.policy token: the baseline is the token policy WMRL starts from (BC on DINO tokens), not BC-ResNet."
    md = table_markdown(t, base, "wmrl", title, note=note)
    t, md = with_decoding_gap(t, md, imagined_env_calibration)
    _log_table("wmrl_success", t, md, base, "wmrl")
    return t, md


def speed_table(world_model, start_policy, feature_cache, episode_index: pd.DataFrame, params: dict,
                rl_params: dict, features_params: dict, tasks: list[str]):
    """-> (speed table, markdown): imagined env (batched world model) vs the real simulator (render; render + DINO
    encode). One imagined chunk-step stands for ``chunk`` simulator steps of ``num_envs`` envs: compare
    ``frames_per_s``."""
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.success import speed_markdown
    from rla_pipeline.rl.imagined_env import imagined_steps_per_second
    from rla_pipeline.rl.sim_eval import sim_steps_per_second

    cfg = EvaluationConfig.from_dict(params)
    encoder = dino_encoder(features_params, feature_cache)
    chunk, action_dim = start_policy.config.chunk, start_policy.config.action_dim
    env, _ = make_imagined_env(world_model, feature_cache, episode_index, tasks, rl_params, chunk)
    im = imagined_steps_per_second(env, torch.zeros(env.num_envs, chunk, action_dim), n_calls=cfg.speed_calls)
    scfg = sim_config(cfg, episode_index, tasks)
    sim = sim_steps_per_second(list(tasks)[0], scfg, encoder=encoder, n_steps=cfg.speed_steps)
    t = pd.DataFrame([
        {"loop": f"imagined env ({env.num_envs} envs batched, chunk {chunk})", "frames_per_s": im["frames_per_s"],
         "env_steps_per_s": im["env_chunks_per_s"], "note": "one world-model call per chunk for all envs"},
        {"loop": "ManiSkill simulator (render)", "frames_per_s": sim["sim_render_steps_per_s"],
         "env_steps_per_s": sim["sim_render_steps_per_s"], "note": f"1 env, {scfg.image_size} px, CPU physics"},
        {"loop": "ManiSkill simulator (render + DINO encode)", "frames_per_s": sim["sim_render_encode_steps_per_s"],
         "env_steps_per_s": sim["sim_render_encode_steps_per_s"], "note": "what a token policy pays per observed frame"},
    ])
    tracking.log_metrics({f"speed/{i}_frames_per_s": v for i, v in enumerate(t["frames_per_s"])})
    return t, speed_markdown(t)
