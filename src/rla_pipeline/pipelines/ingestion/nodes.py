"""Nodes of the ``ingestion`` pipeline: each reads the episode store handle and parameters, calls a source.

Every source skips episodes already stored with the same recipe digest, so a re-run with nothing changed does
no work. ManiSkill is imported only inside the simulate_* nodes (and only when ``run_simulation`` is true).
"""
from __future__ import annotations

import logging

import pandas as pd

from rla_pipeline import tracking
from rla_pipeline.episodes.format import EpisodeStore
from rla_pipeline.episodes.sources import index as episode_index
from rla_pipeline.episodes.sources.index import IngestionConfig
from rla_pipeline.episodes.sources.lerobot import import_lerobot
from rla_pipeline.episodes.sources.video_folder import SOURCE_ROW_COLUMNS, import_video_folder, rows_frame
from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)


def _config(ingestion: dict) -> IngestionConfig:
    return from_dict(IngestionConfig, ingestion, where="ingestion")


def _progress():  # tqdm for the importers
    from tqdm.auto import tqdm

    return tqdm


def _simulate(kind: str, store: EpisodeStore, ingestion: dict, tasks: list[str], seed: int) -> pd.DataFrame:
    cfg = _config(ingestion)
    if not cfg.run_simulation:
        logger.info("ingestion.run_simulation is false: no %s episodes simulated", kind)
        return rows_frame([])
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, simulate_episodes

    sim = dict(cfg.simulation)
    # the global `tasks` and `seed` parameters apply unless the simulation block sets its own
    if sim.get("tasks") is None:
        sim["tasks"] = list(tasks)
    if sim.get("seed") is None:
        sim["seed"] = seed
    return simulate_episodes(SimulationConfig.from_dict(sim), kind, store, progress=True)


def simulate_demos(episodes: EpisodeStore, ingestion: dict, tasks: list[str], seed: int) -> pd.DataFrame:
    """Scripted-expert demos for every task; one row per attempt (failed attempts have kept=False)."""
    return _simulate("demo", episodes, ingestion, tasks, seed)


def simulate_play(episodes: EpisodeStore, ingestion: dict, tasks: list[str], seed: int) -> pd.DataFrame:
    """Exploratory play episodes (with actions) for every task; one row per attempt."""
    return _simulate("play", episodes, ingestion, tasks, seed)


def simulate_actionless(episodes: EpisodeStore, ingestion: dict, tasks: list[str], seed: int) -> pd.DataFrame:
    """Simulated episodes stored without actions (the actionless video pool); one row per attempt."""
    return _simulate("actionless", episodes, ingestion, tasks, seed)


def import_video_folders(episodes: EpisodeStore, ingestion: dict) -> pd.DataFrame:
    """Every folder of ``ingestion.video_folders`` as actionless episodes; one row per video file."""
    cfg = _config(ingestion)
    parts = [import_video_folder(folder, episodes, progress=_progress()) for folder in cfg.video_folders]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SOURCE_ROW_COLUMNS)


def import_lerobot_datasets(episodes: EpisodeStore, ingestion: dict) -> pd.DataFrame:
    """Every LeRobot dataset folder of ``ingestion.lerobot_datasets``; one row per episode."""
    cfg = _config(ingestion)
    parts = [import_lerobot(ds, episodes, progress=_progress()) for ds in cfg.lerobot_datasets]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SOURCE_ROW_COLUMNS)


def build_episode_index(
    episodes: EpisodeStore,
    demo_attempts: pd.DataFrame,
    play_attempts: pd.DataFrame,
    actionless_attempts: pd.DataFrame,
    video_folder_episodes: pd.DataFrame,
    lerobot_episodes: pd.DataFrame,
    ingestion: dict,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate what the sources listed; returns (episode_index, ingestion_summary, skipped_episodes).

    Raises EpisodeError (naming the episode and file) on a bad or duplicate episode unless
    ``ingestion.skip_bad_episodes`` (then the episode is dropped and listed in skipped_episodes).
    """
    cfg = _config(ingestion)
    rows = episode_index.combine_source_rows(
        [demo_attempts, play_attempts, actionless_attempts, video_folder_episodes, lerobot_episodes]
    )
    index, skipped = episode_index.build_episode_index(
        episodes, rows, skip_bad_episodes=cfg.skip_bad_episodes, decode=cfg.validate_decode
    )
    summary = episode_index.ingestion_summary(index, rows, skipped)
    tracking.log_metrics(episode_index.summary_metrics(summary))
    logger.info("episode index: %d episodes, %d skipped\n%s", len(index), len(skipped), summary.to_string(index=False))
    return index, summary, skipped
