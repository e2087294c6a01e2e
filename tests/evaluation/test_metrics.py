"""Evaluation metrics on inputs whose answers are known."""
import numpy as np
import pandas as pd
import pytest
import torch

from rla_pipeline.evaluation.metrics import (
    eval_pairs,
    rla_reconstruction,
    rollout_action_chunks,
    spearman,
    split_horizon,
    temporal_progression,
    token_l1,
    world_model_table,
)


class ArrayCache:
    """The two methods of FeatureCache the metrics use, over in-memory arrays."""

    def __init__(self, tokens: dict, actions: dict):
        self._tokens, self._actions = tokens, actions

    def tokens(self, eid):
        return self._tokens[eid]

    def steps(self, eid):
        return {"action": self._actions[eid]} if eid in self._actions else {}


def _linear_episode(T=12, N=4, D=3):
    """Tokens that move linearly in time: s_t = t * ones (so |s_{t+h} - s_t| = h exactly)."""
    return np.arange(T, dtype=np.float32)[:, None, None] * np.ones((T, N, D), dtype=np.float32)


class CopyModel(torch.nn.Module):
    """A 'world model' that predicts s_{t+h} = s_t (and an 'RLA' that reconstructs by copying s_t)."""

    def forward(self, s_t, s_th):
        return s_t.clone(), torch.zeros(s_t.shape[0], 1, 1)

    def predict_next(self, s_t, actions, mask, generator=None):
        return s_t.clone()

    def rollout(self, s_0, chunks, masks, generator=None):
        return [s_0.clone() for _ in chunks]


class InterpolatingRLA(torch.nn.Module):
    """z = s_{t+h} - s_t; decode adds z: decodes of a*z land exactly a of the way from s_t to s_{t+h}."""

    def encode(self, s_t, s_th):
        return s_th - s_t

    def decode(self, s_t, z):
        return s_t + z


def test_token_l1_and_spearman():
    a, b = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    b[1] *= 3
    assert torch.allclose(token_l1(a, b), torch.tensor([1.0, 3.0]))
    assert spearman([0, 0.5, 1], [0, 1, 2]) == pytest.approx(1.0)
    assert spearman([0, 0.5, 1], [2, 1, 0]) == pytest.approx(-1.0)
    assert spearman([0, 0.5, 1], [1, 1, 1]) == 0.0  # no ordering information


def test_copy_baseline_error_is_exact():
    cache = ArrayCache({"e": _linear_episode()}, {})
    table = rla_reconstruction(CopyModel(), cache, ["e"], horizons=[2, 5], stride=3)
    by_h = table.set_index("h")
    assert by_h.loc["2", "copy_l1"] == pytest.approx(2.0) and by_h.loc["5", "copy_l1"] == pytest.approx(5.0)
    assert by_h.loc["2", "rla_l1"] == pytest.approx(2.0)  # the copy model equals the copy baseline
    assert table.ratio.to_list() == pytest.approx([1.0] * len(table))
    assert by_h.loc["2", "pairs"] == len(range(0, 12 - 2, 3))


def test_temporal_progression_of_a_perfect_interpolator_is_one():
    cache = ArrayCache({"e": _linear_episode(T=16)}, {})
    prog = temporal_progression(InterpolatingRLA(), cache, ["e"], h=10, alphas=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                stride=2)
    assert len(prog) == 3
    # noise is N(0, std(z)^2) = 0 here (z is constant), so decodes are exactly s_t + a h
    assert prog.spearman.to_list() == pytest.approx([1.0, 1.0, 1.0])
    assert prog.nearest.iloc[0] == [0, 2, 4, 6, 8, 10]


def test_horizon_chunks_and_action_windows():
    assert split_horizon(30, 10) == [10, 10, 10]
    assert split_horizon(15, 10) == [10, 5]
    assert split_horizon(5, 10) == [5]
    acts = np.arange(20, dtype=np.float32)[:, None]
    chunks, masks = rollout_action_chunks(acts, 3, [4, 2], max_actions=5)
    assert chunks[0][:, 0].tolist() == [3, 4, 5, 6, 0] and masks[0].tolist() == [True] * 4 + [False]
    assert chunks[1][:2, 0].tolist() == [7, 8] and masks[1].sum() == 2


def test_world_model_table_copy_rows_exact():
    cache = ArrayCache({"e": _linear_episode(T=40), "f": _linear_episode(T=40)},
                       {"e": np.zeros((40, 2), np.float32), "f": np.zeros((40, 2), np.float32)})
    table = world_model_table({"copy_model": CopyModel()}, cache, ["e", "f"], horizons=[5, 15, 30], chunk=10,
                              max_actions=10, stride=5)
    copy = table[table.model == "copy"].set_index("horizon")
    assert copy.token_l1.to_dict() == pytest.approx({5: 5.0, 15: 15.0, 30: 30.0})
    assert copy.chunks.to_dict() == {5: 1, 15: 2, 30: 3}
    model = table[table.model == "copy_model"].set_index("horizon")
    assert model.token_l1.to_dict() == pytest.approx({5: 5.0, 15: 15.0, 30: 30.0})
    assert model.vs_copy.to_list() == pytest.approx([1.0, 1.0, 1.0])


def test_eval_pairs_fixed_and_in_range():
    pairs = eval_pairs({"a": 10, "b": 4}, [3], stride=2)
    assert isinstance(pairs, pd.DataFrame)
    assert ((pairs.t + pairs.h) < pairs.episode_id.map({"a": 10, "b": 4})).all()
    assert pairs[pairs.episode_id == "a"].t.tolist() == [0, 2, 4, 6]
