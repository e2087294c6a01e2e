"""Typed stage configs: every conf env builds them, a typo fails naming key, block and file, envs hold only diffs."""
from __future__ import annotations

import pytest
import yaml


def _parameters(project_root, env):
    """Kedro's own merge of conf/base and ``env`` (what `kedro run --env=ENV` gives the nodes)."""
    from kedro.config import OmegaConfigLoader

    from rla_pipeline.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(str(project_root / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]


@pytest.mark.parametrize("env", ["local", "test", "paper", "eval_large", "bc_resolve"])
def test_every_conf_env_builds_every_stage_config(project_root, env):
    from rla_pipeline.stages.config import STAGE_CONFIGS, check_parameters

    params = _parameters(project_root, env)
    assert set(STAGE_CONFIGS) <= set(params)
    check_parameters(params)


def test_envs_merge_nested_blocks_key_by_key(project_root):
    from rla_pipeline.stages.rla import RLAStageConfig

    base, test = _parameters(project_root, "local"), _parameters(project_root, "test")
    cfg = RLAStageConfig.from_dict(test["rla"])
    assert cfg.samples.h_max == 8  # from conf/test
    assert cfg.samples.h_min == base["rla"]["samples"]["h_min"]  # kept from conf/base
    assert test["checkpoint_root"] is None and base["checkpoint_root"].endswith("06_models/checkpoints")


@pytest.mark.parametrize("env", ["test", "paper", "eval_large", "bc_resolve"])
def test_env_files_hold_only_what_differs_from_base(project_root, env):
    def leaves(d, pre=""):
        out = {}
        for k, v in d.items():
            key = f"{pre}.{k}" if pre else k
            out.update(leaves(v, key) if isinstance(v, dict) and v else {key: v})
        return out

    base = {}
    for f in (project_root / "conf" / "base").glob("parameters*.yml"):
        base.update(leaves(yaml.safe_load(f.read_text()) or {}))
    for f in (project_root / "conf" / env).glob("parameters*.yml"):
        over = leaves(yaml.safe_load(f.read_text()) or {})
        assert not {k for k in over if "checkpoint_dir" in k}, f"{f.name}: checkpoints go under checkpoint_root"
        same = sorted(k for k, v in over.items() if k in base and base[k] == v)
        assert not same, f"{f.name} repeats base values: {same}"
        unknown = sorted(k for k in over if k not in base and not any(b.startswith(k + ".") for b in base))
        assert not unknown, f"{f.name} sets keys base does not have: {unknown}"


def test_a_typo_in_a_nested_block_names_the_key_the_block_and_the_file(project_root):
    from rla_pipeline.stages.rla import RLAStageConfig
    from rla_pipeline.stages.world_model import WorldModelStageConfig
    from rla_pipeline.utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"\['widht'\].*rla\.model \(conf/<env>/parameters_rla\.yml\)"):
        RLAStageConfig.from_dict({"model": {"widht": 8}})
    with pytest.raises(ConfigError, match=r"\['max_step'\].*rla\.trainer"):
        RLAStageConfig.from_dict({"trainer": {"max_step": 8}})
    with pytest.raises(ConfigError, match=r"\['predict_residul'\].*world_model\.baselines\.deterministic"):
        WorldModelStageConfig.from_dict({"baselines": {"deterministic": {"predict_residul": False}}})
    with pytest.raises(ValueError, match="checkpoint_root"):
        RLAStageConfig.from_dict({"trainer": {"checkpoint_dir": "/tmp/x"}})


def test_the_large_evaluation_env_resolves_a_15_point_difference_and_changes_nothing_else(project_root):
    """conf/eval_large: paired episodes per cell enough for 50 % vs 65 % (McNemar, 5 %, power 0.8, independent
    outcomes); the small default's 5 are not; every other parameter is the default's, so the trained models are
    reused and only the evaluation differs."""
    from rla_pipeline.evaluation.success import episodes_to_resolve

    base, large = _parameters(project_root, "local"), _parameters(project_root, "eval_large")
    need = episodes_to_resolve(0.50, 0.65)
    assert large["evaluation"]["n_episodes"] >= need > base["evaluation"]["n_episodes"]
    assert {k: v for k, v in large.items() if k != "evaluation"} == {k: v for k, v in base.items() if k != "evaluation"}
    assert {k: v for k, v in large["evaluation"].items() if k != "n_episodes"} == \
        {k: v for k, v in base["evaluation"].items() if k != "n_episodes"}
