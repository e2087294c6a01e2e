"""Table 3 reuses Table 2's BC-ResNet episodes when (and only when) they are the same episodes by construction."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from rla_pipeline.sim import vulkan

TASK = "PullCube-v1"
PARAMS = {"n_episodes": 2, "table3_tasks": None, "sim": {"max_steps": 4, "execute_steps": 2, "workers": 1}}


def _policy(seed: int):
    from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy

    torch.manual_seed(seed)
    return BCResNetPolicy(BCResNetConfig(image_size=32, action_dim=4, chunk=4, hidden=16, num_tasks=1,
                                         task_names=[TASK]))


def _index():
    return pd.DataFrame({"task": [TASK], "kind": ["demo"], "height": [64], "control_mode": ["pd_ee_delta_pos"],
                         "seed": [0]})


@pytest.fixture
def simulated_policies(monkeypatch):
    """Records which policies each evaluate_many_in_sim call really simulates (the real function still runs)."""
    try:
        vulkan.ensure_vulkan()
    except vulkan.VulkanUnavailableError as exc:
        pytest.skip(str(exc))
    from rla_pipeline.rl import sim_eval

    calls: list[list[str]] = []
    real = sim_eval.evaluate_many_in_sim

    def spy(policies, *args, **kwargs):
        calls.append(list(policies))
        return real(policies, *args, **kwargs)

    monkeypatch.setattr(sim_eval, "evaluate_many_in_sim", spy)
    return calls


@pytest.mark.sim
def test_table3_reuses_bc_rows_only_for_the_same_weights(simulated_policies):
    from rla_pipeline.stages.evaluation import evaluate_bc, evaluate_wmrl

    bc, bc_rla, wmrl = _policy(0), _policy(1), _policy(2)
    bc_eval = evaluate_bc(bc, bc_rla, _index(), PARAMS, [TASK], seed=0)
    assert simulated_policies == [["bc", "bc_rla"]]

    # the start policy is bc_policy (a copy with equal weights): the baseline is not simulated again
    same = evaluate_wmrl(copy.deepcopy(bc), wmrl, None, _index(), PARAMS, {}, [TASK], 0,
                         bc_policy=bc, bc_eval_episodes=bc_eval)
    assert simulated_policies[-1] == ["wmrl"]
    wall = ["seconds", "sim_seconds", "encode_seconds"]
    pd.testing.assert_frame_equal(same[same["policy"] == "bc"].reset_index(drop=True),
                                  bc_eval[bc_eval["policy"] == "bc"].reset_index(drop=True))
    assert list(same["policy"]) == ["bc", "bc", "wmrl", "wmrl"]

    # other weights (WMRL's start policy trained further than bc_policy): the baseline is simulated
    other = copy.deepcopy(bc)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    sim = evaluate_wmrl(other, wmrl, None, _index(), PARAMS, {}, [TASK], 0, bc_policy=bc, bc_eval_episodes=bc_eval)
    assert simulated_policies[-1] == ["bc", "wmrl"]
    # the same WMRL episodes either way, and the simulated baseline has the same layout as the reused one
    pd.testing.assert_frame_equal(sim[sim["policy"] == "wmrl"].drop(columns=wall).reset_index(drop=True),
                                  same[same["policy"] == "wmrl"].drop(columns=wall).reset_index(drop=True))
    assert list(sim.columns) == list(same.columns)

    # same weights but Table 2 ran another simulator setting (step limit): simulated
    stale = bc_eval.assign(sim_digest="0" * 16)
    evaluate_wmrl(copy.deepcopy(bc), wmrl, None, _index(), PARAMS, {}, [TASK], 0, bc_policy=bc,
                  bc_eval_episodes=stale)
    assert simulated_policies[-1] == ["bc", "wmrl"]
