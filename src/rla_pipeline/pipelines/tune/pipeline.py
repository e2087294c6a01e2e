"""tune: Optuna study over the RLA latent shape K x d (and lr) on the cached features (``stages.tune``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import tune


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        check_parameters_node(),
        Node(
            tune.tune_rla_shape,
            inputs=["optuna_storage", "feature_cache", "episode_index", "episode_splits", "params:rla", "params:tune",
                    "params:device"],
            outputs=["rla_tuned_shape", "rla_tuning_trials", "rla_tuning_tradeoff"],
            name="tune_rla_latent_shape",
        )
    ])
