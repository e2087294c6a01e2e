"""``evaluation``: every policy in the real ManiSkill simulator on held-out seeds -> success tables shaped like the
paper's Tables 2 and 3 (Parquet + Markdown, with the paper's numbers beside as reference) and a speed table
(``stages.evaluation``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.report.pipeline import create_pipeline as report_pipeline
from rla_pipeline.stages import evaluation as ev


def create_pipeline(**kwargs) -> Pipeline:
    # evaluate_wmrl_in_sim takes Table 2's bc_policy and bc_eval_episodes: under rl.policy bc_resnet its baseline
    # is that same BC-ResNet on the same seeds, whose episodes it reuses instead of simulating them again.
    # The HTML report is part of evaluation (its node lives in pipelines/report, also runnable alone).
    return report_pipeline() + Pipeline(
        [
            Node(ev.evaluate_bc, ["bc_policy", "bc_rla_policy", "episode_index", "params:evaluation",
                                  "params:tasks", "params:seed"], "bc_eval_episodes", name="evaluate_bc_in_sim"),
            Node(ev.evaluate_wmrl, ["wmrl_start_policy", "wmrl_policy", "feature_cache", "episode_index",
                                    "params:evaluation", "params:features", "params:tasks", "params:seed",
                                    "params:rl", "bc_policy", "bc_eval_episodes"],
                 "wmrl_eval_episodes", name="evaluate_wmrl_in_sim"),
            Node(ev.bc_success_table, "bc_eval_episodes", ["bc_success_table", "bc_success_table_md"],
                 name="bc_success_table"),
            Node(ev.wmrl_success_table, ["wmrl_eval_episodes", "imagined_env_calibration"],
                 ["wmrl_success_table", "wmrl_success_table_md"],
                 name="wmrl_success_table"),
            Node(ev.speed_table, ["world_model", "wmrl_start_policy", "feature_cache", "episode_index",
                                  "params:evaluation", "params:rl", "params:features", "params:tasks"],
                 ["speed_table", "speed_table_md"],
                 name="speed_table"),
        ],
        tags="evaluation",
    )
