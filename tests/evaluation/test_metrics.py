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


# ---------------------------------------------------------------- issue 11: spread pairs, bootstrap, controls
def test_world_model_pairs_are_spread_over_episodes_not_the_first_one():
    from rla_pipeline.evaluation.metrics import rollout_batch

    eps = {e: _linear_episode(T=60) for e in "abcd"}
    cache = ArrayCache(eps, {e: np.zeros((60, 2), np.float32) for e in eps})
    b = rollout_batch(cache, ["a", "c", "b", "d"], h=5, chunk=5, max_actions=5, stride=2, max_pairs=8)
    # 8 pairs over 4 episodes: two starts of each (the old head(8) took all 8 from episode "a")
    assert b.pairs.groupby("episode_id").size().to_dict() == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert b.pairs[b.pairs.episode_id == "a"].t.tolist() == [0, 2]


def test_episode_bootstrap_interval_covers_a_known_ratio_and_difference():
    from rla_pipeline.evaluation.metrics import episode_bootstrap

    rng = np.random.default_rng(0)
    rows = []
    for e in range(0, 30, 2):
        cs = rng.uniform(0.5, 2.0) * rng.uniform(0.8, 1.2, size=4)  # episodes differ in how much moves
        ug, ub = rng.uniform(0, 0.4, size=2)  # and in how well each model does: antithetic episode twins, so the
        for twin, sign in ((e, 1), (e + 1, -1)):  # pooled ratios are exactly 0.5 and 0.8
            for c in cs:
                rows.append({"episode_id": f"e{twin}", "copy": c, "good": 0.5 * c * (1 + sign * ug),
                             "bad": 0.8 * c * (1 + sign * ub)})
    errors = pd.DataFrame(rows)
    ci = episode_bootstrap(errors, ["good", "bad"], reference="good", n_boot=500, seed=0)
    assert ci["good"]["vs_copy_ci_low"] < 0.5 < ci["good"]["vs_copy_ci_high"]
    assert ci["bad"]["vs_copy_ci_low"] < 0.8 < ci["bad"]["vs_copy_ci_high"]
    assert ci["bad"]["ref_minus_ci_low"] < -0.3 < ci["bad"]["ref_minus_ci_high"] < 0  # good beats bad by 0.3
    assert "ref_minus_vs_copy" not in ci["good"]


def test_world_model_table_has_intervals_and_reference_difference():
    cache = ArrayCache({"e": _linear_episode(T=40), "f": _linear_episode(T=40)},
                       {"e": np.zeros((40, 2), np.float32), "f": np.zeros((40, 2), np.float32)})
    table = world_model_table({"a": CopyModel(), "b": CopyModel()}, cache, ["e", "f"], horizons=[5], chunk=5,
                              max_actions=5, stride=5, n_boot=50, reference="a")
    b = table[table.model == "b"].iloc[0]
    assert b.episodes == 2 and b.vs_copy_ci_low == pytest.approx(1.0) and b.vs_copy_ci_high == pytest.approx(1.0)
    assert b.ref_minus_vs_copy == pytest.approx(0.0) and b.ref_minus_ci_low == pytest.approx(0.0)
    assert np.isnan(table[table.model == "a"].iloc[0].ref_minus_vs_copy)


class ConstantDecoderRLA(InterpolatingRLA):
    """Ignores z: decodes every latent to s_t. A perfect interpolator's score must beat it; its own is 0."""

    def decode(self, s_t, z):
        return s_t.clone()


def test_temporal_progression_prints_a_shuffled_z_control():
    eps = {"e": _linear_episode(T=16), "f": 3.0 * _linear_episode(T=16)}
    cache = ArrayCache(eps, {})
    prog = temporal_progression(InterpolatingRLA(), cache, ["e", "f"], h=10, alphas=[0.0, 0.5, 1.0], stride=4)
    assert "spearman_shuffled_z" in prog.columns and prog.spearman.to_list() == pytest.approx([1.0] * len(prog))
    # a z from the other episode (3x the motion) overshoots: alpha no longer walks s_t -> s_t+h in step
    assert prog.spearman_shuffled_z.mean() < prog.spearman.mean()
    flat = temporal_progression(ConstantDecoderRLA(), cache, ["e", "f"], h=10, alphas=[0.0, 0.5, 1.0], stride=4)
    assert flat.spearman.to_list() == [0.0] * len(flat) and flat.spearman_shuffled_z.to_list() == [0.0] * len(flat)


def test_world_model_table_equals_the_per_horizon_reference_path():
    """The table's numbers are those of the straightforward path (per horizon: its pairs, one seeded rollout per
    model, the episode bootstrap) and the cost measured once per model equals a per-horizon measurement in FLOPs."""
    from rla_pipeline.evaluation.metrics import episode_bootstrap, rollout_batch, rollout_l1, step_cost
    from rla_pipeline.models.world_model import AbsoluteFlowWorldModel, DeterministicWorldModel, WorldModelConfig

    rng = np.random.default_rng(0)
    ids = ["e", "f", "g"]
    cache = ArrayCache({e: rng.normal(size=(36, 4, 8)).astype(np.float32) for e in ids},
                       {e: rng.normal(size=(36, 3)).astype(np.float32) for e in ids})
    torch.manual_seed(0)
    cfg = WorldModelConfig(num_tokens=4, token_dim=8, action_dim=3, max_actions=10, width=16, heads=2, cond_depth=1,
                           flow_depth=1, depth=1, sample_steps=3, action_embed_dim=8)
    models = {"flow": AbsoluteFlowWorldModel(cfg), "det": DeterministicWorldModel(cfg)}
    horizons = [5, 15, 30]
    table = world_model_table(models, cache, ids, horizons, chunk=10, max_actions=10, stride=4, max_pairs=9, seed=3,
                              n_boot=50, reference="flow")
    for h in horizons:
        batch = rollout_batch(cache, ids, h, 10, 10, 4, 9)
        errors = batch.pairs[["episode_id"]].assign(copy=token_l1(batch.s_0, batch.target).numpy())
        l1 = {}
        for name, m in models.items():
            l1[name], pred = rollout_l1(m.eval(), batch, seed=3)
            errors[name] = token_l1(pred, batch.target).numpy()
        ci = episode_bootstrap(errors, list(models), "flow", 50, 3)
        rows = table[table.horizon == h].set_index("model")
        for name, m in models.items():
            row = rows.loc[name]
            assert row.token_l1 == l1[name]
            for col in ("vs_copy_ci_low", "vs_copy_ci_high"):
                assert row[col] == ci[name][col]
            if name != "flow":
                assert row.ref_minus_ci_low == ci[name]["ref_minus_ci_low"]
            k = min(16, len(batch.pairs))
            own = step_cost(m, batch.s_0[:k], batch.chunks[0][:k], batch.masks[0][:k], repeats=1)
            assert row.gflops_per_step == own["gflops_per_step"]
    assert (table.loc[table.model == "flow", "gflops_per_step"] > 0).all()
