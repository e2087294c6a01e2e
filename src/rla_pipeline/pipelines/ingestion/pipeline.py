"""``ingestion``: simulate (demo, play, actionless) + import video folders and LeRobot datasets -> episode index."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.ingestion import nodes


def create_pipeline(**kwargs) -> Pipeline:
    sim_inputs = ["episodes", "params:ingestion", "params:tasks", "params:seed"]
    return Pipeline(
        [
            Node(nodes.simulate_demos, sim_inputs, "demo_attempts", name="simulate_demos"),
            Node(nodes.simulate_play, sim_inputs, "play_attempts", name="simulate_play"),
            Node(nodes.simulate_actionless, sim_inputs, "actionless_attempts", name="simulate_actionless"),
            Node(nodes.import_video_folders, ["episodes", "params:ingestion"], "video_folder_episodes",
                 name="import_video_folders"),
            Node(nodes.import_lerobot_datasets, ["episodes", "params:ingestion"], "lerobot_episodes",
                 name="import_lerobot_datasets"),
            Node(
                nodes.build_episode_index,
                ["episodes", "demo_attempts", "play_attempts", "actionless_attempts", "video_folder_episodes",
                 "lerobot_episodes", "params:ingestion"],
                ["episode_index", "ingestion_summary", "skipped_episodes"],
                name="build_episode_index",
            ),
        ],
        tags="ingestion",
    )
