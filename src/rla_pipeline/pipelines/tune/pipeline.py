"""tune: Optuna study over the RLA latent shape K x d (and lr) on the cached features."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.tune import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            nodes.tune_rla_shape,
            inputs=["optuna_storage", "feature_cache", "episode_index", "episode_splits", "params:rla", "params:tune",
                    "params:device"],
            outputs=["rla_tuned_shape", "rla_tuning_trials", "rla_tuning_tradeoff"],
            name="tune_rla_latent_shape",
        )
    ])
