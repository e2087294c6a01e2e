"""A short real-simulator evaluation of untrained (trivial) policies: the loop, the row schema, seed hygiene."""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy, TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.sim_eval import SimEvalConfig, check_disjoint_seeds, evaluate_in_sim

COLUMNS = {"policy", "task", "seed", "success", "steps", "seconds", "sim_seconds", "encode_seconds", "policy_calls"}


def test_eval_seeds_must_not_overlap_training_seeds():
    check_disjoint_seeds([10_000, 10_001], [0, 1, 2, None])
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint_seeds([3, 10_000], range(10))


@pytest.mark.sim
def test_image_and_token_policies_run_in_maniskill():
    torch.manual_seed(0)
    cfg = SimEvalConfig(image_size=64, max_steps=6, execute_steps=4)
    image_policy = BCResNetPolicy(BCResNetConfig(image_size=32, action_dim=4, chunk=4, hidden=16, num_tasks=1,
                                                 task_names=["PushCube-v1"]))
    df = evaluate_in_sim("image", image_policy, "PushCube-v1", n_episodes=1, seeds=[10_000], cfg=cfg, policy_name="bc")
    assert set(df.columns) == COLUMNS and len(df) == 1
    row = df.iloc[0]
    assert row["steps"] == 6 and row["policy_calls"] == 2 and row["seed"] == 10_000 and row["policy"] == "bc"

    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    enc = DinoEncoder(EncoderConfig(model_name="vit_small_patch14_dinov2.lvd142m", image_size=28, weights="random",
                                    device="cpu"))
    token_policy = TokenPolicy(TokenPolicyConfig(num_tokens=enc.num_tokens, token_dim=enc.token_dim, action_dim=4,
                                                 chunk=3, hidden=16))
    df = evaluate_in_sim("token", token_policy, "PushCube-v1", n_episodes=1, seeds=[10_001], cfg=cfg, encoder=enc)
    assert df.iloc[0]["steps"] == 6 and df.iloc[0]["policy_calls"] == 2 and df.iloc[0]["encode_seconds"] > 0
    with pytest.raises(ValueError, match="encoder"):
        evaluate_in_sim("token", token_policy, "PushCube-v1", n_episodes=1, seeds=[1], cfg=cfg)
