"""Nodes of ``evaluation``: policies in the real simulator -> success tables (paper Tables 2 and 3) + speed table."""
from __future__ import annotations

import pandas as pd


def _encoder(features_params: dict, feature_cache):
    """The DINO encoder of the feature cache (same config), checked against the cache's weights digest."""
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    enc = DinoEncoder(EncoderConfig.from_dict(features_params["encoder"]))
    digests = set(feature_cache.manifest()["weights_digest"].dropna())
    if digests and enc.weights_digest not in digests:
        raise ValueError("the evaluation DINO encoder's weights differ from the ones the feature cache was built "
                         "with: token policies would see other features than they were trained on")
    return enc


def evaluate_bc(bc_policy, bc_rla_policy, episode_index: pd.DataFrame, params: dict, tasks: list[str],
                seed: int) -> pd.DataFrame:
    from rla_pipeline.rl.stages import EvaluationConfig, evaluate_policies_in_sim

    return evaluate_policies_in_sim({"bc": ("image", bc_policy), "bc_rla": ("image", bc_rla_policy)}, tasks,
                                    EvaluationConfig.from_dict(params), episode_index, seed)


def evaluate_wmrl(token_bc_policy, wmrl_policy, feature_cache, episode_index: pd.DataFrame, params: dict,
                  features_params: dict, tasks: list[str], seed: int) -> pd.DataFrame:
    from rla_pipeline.rl.stages import EvaluationConfig, evaluate_policies_in_sim

    return evaluate_policies_in_sim({"token_bc": ("token", token_bc_policy), "wmrl": ("token", wmrl_policy)}, tasks,
                                    EvaluationConfig.from_dict(params), episode_index, seed,
                                    encoder=_encoder(features_params, feature_cache))


def _log_table(name: str, table: pd.DataFrame, markdown: str, baseline: str, method: str) -> None:
    import tempfile
    from pathlib import Path

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
    from rla_pipeline.evaluation.success import PAPER_TABLE2, comparison_table, table_markdown

    t = comparison_table(bc_eval_episodes, "bc", "bc_rla", PAPER_TABLE2, ("BC-ResNet", "+RLA"))
    md = table_markdown(t, "bc", "bc_rla", "Table 2 (ours): BC-ResNet vs BC-ResNet + RLA latent head, real simulator")
    _log_table("bc_success", t, md, "bc", "bc_rla")
    return t, md


def wmrl_success_table(wmrl_eval_episodes: pd.DataFrame):
    """-> (table, markdown): token BC vs WMRL per task + average, with the paper's Table 3 beside."""
    from rla_pipeline.evaluation.success import PAPER_TABLE3, comparison_table, table_markdown

    t = comparison_table(wmrl_eval_episodes, "token_bc", "wmrl", PAPER_TABLE3, ("BC-ResNet", "WMRL"))
    md = table_markdown(t, "token_bc", "wmrl", "Table 3 (ours): token BC vs WMRL (PPO inside the world model)",
                        note="Our baseline is the token policy WMRL starts from (BC on DINO tokens), not BC-ResNet.")
    _log_table("wmrl_success", t, md, "token_bc", "wmrl")
    return t, md


def speed(world_model, token_bc_policy, feature_cache, episode_index: pd.DataFrame, params: dict, rl_params: dict,
          features_params: dict, tasks: list[str]):
    """-> (speed table, markdown): imagined env steps/s (batched) vs real simulator (render + DINO)."""
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.success import speed_markdown
    from rla_pipeline.rl.stages import EvaluationConfig, WMRLConfig, speed_table

    t = speed_table(world_model, feature_cache, episode_index, tasks, WMRLConfig.from_dict(rl_params),
                    EvaluationConfig.from_dict(params), _encoder(features_params, feature_cache),
                    token_bc_policy.config.chunk, token_bc_policy.config.action_dim)
    tracking.log_metrics({f"speed/{i}_frames_per_s": v for i, v in enumerate(t["frames_per_s"])})
    return t, speed_markdown(t)
