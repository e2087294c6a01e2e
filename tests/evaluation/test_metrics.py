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


# ---------------------------------------------------------------- issue 19: temporal progression with power
def _moving_episodes(n=6, T=40, N=4, D=3, seed=0):
    """Episodes whose tokens drift along their own random direction (unit speed per frame) with small jitter:
    pairs of different episodes move in unrelated directions."""
    rng = np.random.default_rng(seed)
    eps = {}
    for e in range(n):
        v = rng.normal(size=(N, D))
        v /= np.linalg.norm(v)
        x = rng.normal(size=(N, D)) + np.arange(T)[:, None, None] * v + 0.05 * rng.normal(size=(T, N, D))
        eps[f"ep{e}"] = x.astype(np.float32)
    return eps


class NoisyLinearRLA(InterpolatingRLA):
    """decode(s_t, a z + (1 - a) noise) = s_t + a (s_{t+h} - s_t) + (1 - a) noise + a decoder error that depends on
    s_t only: the walk is a straight line from the noise towards s_{t+h}."""

    def decode(self, s_t, z):
        return s_t + z + 0.3 * torch.sin(7.0 * s_t)


class IgnoresZRLA(InterpolatingRLA):
    """Decodes without looking at z (its own drift from s_t only): whatever z is mixed in, nothing changes."""

    def decode(self, s_t, z):
        return s_t + 0.3 * torch.sin(7.0 * s_t)


class NonlinearRLA(InterpolatingRLA):
    """Depends on z nonlinearly, so two different noise vectors would decode differently."""

    def decode(self, s_t, z):
        return s_t + torch.tanh(z) * 3.0


ALPHAS = [i / 10 for i in range(11)]


def test_progression_of_a_linear_decoder_is_shown_and_of_a_z_blind_one_is_not():
    from rla_pipeline.evaluation.metrics import temporal_progression

    eps = _moving_episodes()
    cache = ArrayCache(eps, {})
    prog = temporal_progression(NoisyLinearRLA(), cache, sorted(eps), h=10, alphas=ALPHAS, stride=5,
                                max_pairs=None, donors=8)
    r = prog.iloc[0]
    assert r.pairs == 6 * len(range(0, 30, 5)) and r.episodes == 6 and r.donors == 8
    assert r.progress_at_1 == pytest.approx(1.0, abs=0.1)  # the decode of the true z lands on s_{t+h}
    assert r.spearman == pytest.approx(1.0)  # progress rises with a on every pair
    assert r.progress_at_1_diff_ci_low > 0.5 and r.spearman_diff_ci_low > 0.5
    assert r.progress_at_1_diff_ci_low <= r.progress_at_1_diff <= r.progress_at_1_diff_ci_high
    assert r.verdict.startswith("shown")
    assert r.decoder_over_copy < 1.0 and list(r.alphas) == ALPHAS and len(r.progress_curve) == len(ALPHAS)

    blind = temporal_progression(IgnoresZRLA(), cache, sorted(eps), h=10, alphas=ALPHAS, stride=5,
                                 max_pairs=None, donors=8).iloc[0]
    assert blind.progress_at_1_diff == pytest.approx(0.0, abs=1e-9) and blind.spearman_diff == pytest.approx(0.0)
    assert blind.progress_at_1_diff_ci_low == pytest.approx(0.0, abs=1e-9)
    assert blind.progress_at_1_diff_ci_high == pytest.approx(0.0, abs=1e-9)
    assert blind.verdict.startswith("not shown") and "includes 0" in blind.verdict
    assert blind.decoder_over_copy > 0  # printed beside: the power of the check at this h


def test_progression_control_uses_the_same_noise_as_the_true_z_and_many_donors():
    from rla_pipeline.evaluation.metrics import progression_pairs

    eps = _moving_episodes()
    cache = ArrayCache(eps, {})
    pp = progression_pairs(NonlinearRLA(), cache, sorted(eps), h=10, alphas=ALPHAS, stride=5, max_pairs=None,
                           donors=5, seed=3)
    # at a = 0 the latent is the noise alone: the true z and every donor decode the very same input
    first = pp.progress.map(lambda p: p[0])
    assert first.to_list() == pytest.approx(pp.progress_shuffled_z.map(lambda p: p[0]).to_list(), rel=1e-12, abs=1e-12)
    other_seed = progression_pairs(NonlinearRLA(), cache, sorted(eps), h=10, alphas=ALPHAS, stride=5,
                                   max_pairs=None, donors=5, seed=4)
    assert not np.allclose(first, other_seed.progress.map(lambda p: p[0]))  # the noise matters to this decoder
    assert (pp.donors == 5).all()


def test_progression_donors_come_from_other_episodes_without_repeats():
    from rla_pipeline.evaluation.metrics import _donor_pairs

    eids = ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    donors = _donor_pairs(eids, 4, np.random.default_rng(0))
    for i, d in enumerate(donors):
        assert len(d) == 4 and len(set(d)) == 4 and all(eids[j] != eids[i] for j in d)
    assert _donor_pairs(["a", "a", "a"], 8, np.random.default_rng(0)) == [[1, 2], [0, 2], [0, 1]]


def _pair_table(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for e, vals in values.items():
        for k, v in enumerate(vals):
            rows.append({"episode_id": e, "t": k, "h": 10, "motion_sq": 1.0, "decoder_l1": 0.5, "copy_l1": 1.0,
                         "donors": 3, "progress": [0.0, v], "progress_shuffled_z": [0.0, 0.0], "progress_at_1": v,
                         "progress_at_1_shuffled_z": 0.0, "spearman": float(np.sign(v)), "spearman_shuffled_z": 0.0})
    return pd.DataFrame(rows)


def test_progression_bootstrap_resamples_episodes_not_pairs():
    from rla_pipeline.evaluation.metrics import episode_draws, progression_summary

    # two episodes progress (+1 on each of 25 pairs), two regress (-1): 100 pairs but only 4 independent units
    per_pair = _pair_table({"a": [1.0] * 25, "b": [1.0] * 25, "c": [-1.0] * 25, "d": [-1.0] * 25})
    r = progression_summary(per_pair, [0.0, 1.0], n_boot=2000, seed=0).iloc[0]
    assert r.progress_at_1_diff == pytest.approx(0.0)
    # a pair bootstrap would give about +-0.2 here; resampling the 4 episodes gives the whole [-1, 1]
    assert r.progress_at_1_diff_ci_low == pytest.approx(-1.0) and r.progress_at_1_diff_ci_high == pytest.approx(1.0)
    counts = episode_draws(4, 2000, 0)
    means = counts @ np.array([1.0, 1.0, -1.0, -1.0]) / 4
    assert r.spearman_diff_ci_low == pytest.approx(np.quantile(means, 0.025))
    assert r.verdict == ("not shown: progress at a=1 interval [-1.000, +1.000] includes 0; "
                         "Spearman interval [-1.000, +1.000] includes 0")
    assert r.progress_at_0 == 0.0 and r.decoder_over_copy == pytest.approx(0.5)


def test_progression_summary_weights_pairs_by_their_motion_and_needs_two_episodes():
    from rla_pipeline.evaluation.metrics import progression_summary

    per_pair = _pair_table({"a": [1.0, 1.0], "b": [1.0, 50.0]})
    per_pair.loc[3, "motion_sq"] = 1e-6  # the near-static pair's wild projection hardly counts
    r = progression_summary(per_pair, [0.0, 1.0]).iloc[0]
    assert r.progress_at_1 == pytest.approx(1.0, abs=1e-4)
    one = progression_summary(_pair_table({"a": [1.0] * 10}), [0.0, 1.0]).iloc[0]
    assert np.isnan(one.progress_at_1_diff_ci_low) and one.verdict.startswith("not tested")


def test_progression_verdict_says_only_what_the_intervals_support():
    from rla_pipeline.evaluation.metrics import progression_verdict

    assert progression_verdict(0.1, 0.3, 0.2, 0.5, 8).startswith("shown: progress at a=1 interval [+0.100, +0.300]")
    v = progression_verdict(-0.05, 0.3, 0.2, 0.5, 8)
    assert v.startswith("not shown: progress at a=1 interval [-0.050, +0.300] includes 0") and "above 0" in v
    assert "below 0 (the shuffled z scores higher)" in progression_verdict(-0.3, -0.1, -0.5, -0.2, 8)
    assert progression_verdict(1e-17, 2e-17, 0.2, 0.5, 8).startswith("not shown")  # rounding is not progress


def test_progression_table_reads_in_the_report():
    from rla_pipeline.evaluation.metrics import temporal_progression
    from rla_pipeline.evaluation.report import build_report, progression_table_view, provenance_from

    eps = _moving_episodes()
    prog = temporal_progression(NoisyLinearRLA(), ArrayCache(eps, {}), sorted(eps), h=10, alphas=[0.0, 0.5, 1.0],
                                stride=5, donors=4)
    view = progression_table_view(prog)
    assert view["progress a=1: true - shuffled"].iloc[0].count("[") == 1 and view["verdict"].iloc[0] == prog.verdict[0]
    page = build_report(provenance=provenance_from(None, None, None), rla_temporal_progression=prog)
    assert prog.verdict[0].split(";")[0] in page and "decoder / copy" in page
    old = pd.DataFrame({"episode_id": ["a"], "h": [10], "spearman": [0.5]})  # an older run's per-pair table
    assert progression_table_view(old) is old


def test_progression_leaves_out_static_pairs_and_needs_alpha_one():
    from rla_pipeline.evaluation.metrics import progression_pairs, temporal_progression

    eps = _moving_episodes(n=2, T=20)
    eps["still"] = np.ones((20, 4, 3), np.float32)
    cache = ArrayCache(eps, {})
    pp = progression_pairs(NoisyLinearRLA(), cache, sorted(eps), h=10, alphas=[0.0, 1.0], stride=5)
    assert "still" not in set(pp.episode_id) and len(pp) == 4
    with pytest.raises(ValueError, match="1.0"):
        temporal_progression(NoisyLinearRLA(), cache, sorted(eps), h=10, alphas=[0.0, 0.5], stride=5)


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


# ---------------------------------------------------------------- honest intervals (issue 21, item 5)
def test_episode_bootstrap_of_one_episode_has_no_interval_not_a_zero_width_one():
    """One validation episode: every resample is that episode, so the old [0.996, 0.996] said nothing. NaN bounds,
    the point estimates unchanged."""
    from rla_pipeline.evaluation.metrics import episode_bootstrap

    errors = pd.DataFrame({"episode_id": ["only"] * 3, "copy": [1.0, 2.0, 1.0], "a": [0.9, 2.0, 1.0],
                           "b": [1.0, 2.0, 1.2]})
    ci = episode_bootstrap(errors, ["a", "b"], reference="a", n_boot=200, seed=0)
    for m in ("a", "b"):
        assert np.isnan(ci[m]["vs_copy_ci_low"]) and np.isnan(ci[m]["vs_copy_ci_high"])
    assert ci["b"]["ref_minus_vs_copy"] == pytest.approx(3.9 / 4 - 4.2 / 4)
    assert np.isnan(ci["b"]["ref_minus_ci_low"]) and np.isnan(ci["b"]["ref_minus_ci_high"])


def test_world_model_table_over_one_episode_has_nan_intervals():
    cache = ArrayCache({"e": _linear_episode(T=40)}, {"e": np.zeros((40, 2), np.float32)})
    table = world_model_table({"a": CopyModel(), "b": CopyModel()}, cache, ["e"], horizons=[5], chunk=5,
                              max_actions=5, stride=5, n_boot=50, reference="a")
    b = table[table.model == "b"].iloc[0]
    assert b.episodes == 1 and b.vs_copy == pytest.approx(1.0)
    assert np.isnan(b.vs_copy_ci_low) and np.isnan(b.vs_copy_ci_high) and np.isnan(b.ref_minus_ci_low)


def test_episode_bootstrap_of_several_episodes_keeps_its_draws():
    """The multi-episode interval is still the 2.5 / 97.5 % quantile over episode_draws' resamples (same seed)."""
    from rla_pipeline.evaluation.metrics import episode_bootstrap, episode_draws

    rng = np.random.default_rng(4)
    eps = np.repeat(["x", "y", "z"], [2, 3, 1])
    errors = pd.DataFrame({"episode_id": eps, "copy": rng.uniform(0.5, 1.5, 6), "a": rng.uniform(0, 1, 6)})
    sums = errors.groupby("episode_id", sort=False)[["copy", "a"]].sum().loc[["x", "y", "z"]].to_numpy()
    tot = episode_draws(3, 300, 7) @ sums
    ratios = tot[:, 1] / tot[:, 0]
    ci = episode_bootstrap(errors, ["a"], None, n_boot=300, seed=7)["a"]
    assert ci["vs_copy_ci_low"] == np.quantile(ratios, 0.025) and ci["vs_copy_ci_high"] == np.quantile(ratios, 0.975)
