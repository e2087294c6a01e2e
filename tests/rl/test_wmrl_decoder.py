"""WMRL's pixel decoder must have seen every task WMRL imagines and Table 3 reports (issue 19): the rl pipeline
feeds ``train_wmrl`` the all-tasks decoder with its training record, and the stage-level check refuses a decoder
that held a task out (as ``pixel_decoder_model`` holds out ``pixel_decoder.split.heldout_task``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig
from rla_pipeline.stages.wmrl import check_decoder_covers_tasks, train_wmrl
from rla_pipeline.utils.hashing import state_dict_digest

N, D, A, H = 4, 6, 3, 4
TASKS = ["PokeCube-v1", "PushT-v1"]


def _decoder(seed=0) -> PixelDecoder:
    torch.manual_seed(seed)
    return PixelDecoder(PixelDecoderConfig(num_tokens=N, token_dim=D, image_size=16, channels=[8, 8], groups=4)).eval()


def _record(decoder, tasks) -> pd.DataFrame:
    """What ``stages.pixel_decoder.decoder_training_record`` writes: per task, episodes and frames + the digest."""
    return pd.DataFrame({"task": list(tasks), "train_episodes": 2, "train_frames": 40,
                         "decoder_digest": state_dict_digest(decoder)})


def test_check_fires_for_a_decoder_that_held_a_table3_task_out():
    dec = _decoder()
    check_decoder_covers_tasks(dec, _record(dec, TASKS), TASKS, table3=TASKS)  # saw every task: passes
    with pytest.raises(ValueError, match=r"never saw task\(s\) \['PokeCube-v1'\].*Table 3"):
        check_decoder_covers_tasks(dec, _record(dec, ["PushT-v1"]), TASKS, table3=TASKS)
    # a task WMRL imagines but Table 3 does not report is required too (its decoded frames drive PPO)
    with pytest.raises(ValueError, match="PullCube-v1"):
        check_decoder_covers_tasks(dec, _record(dec, TASKS), [*TASKS, "PullCube-v1"], table3=TASKS)
    # a task listed with zero training episodes was not seen
    zero = _record(dec, TASKS)
    zero.loc[zero.task == "PokeCube-v1", "train_episodes"] = 0
    with pytest.raises(ValueError, match="PokeCube-v1"):
        check_decoder_covers_tasks(dec, zero, TASKS, table3=TASKS)
    # the record must be of this very decoder
    with pytest.raises(ValueError, match="another decoder"):
        check_decoder_covers_tasks(dec, _record(_decoder(seed=1), TASKS), TASKS, table3=TASKS)


class _ShiftWorldModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.eye(A, D), requires_grad=False)

    def predict_next(self, s_t, actions, action_mask, generator=None):
        return s_t + ((actions * action_mask[..., None]).mean(1) @ self.W)[:, None, :]


class _FakeCache:
    def __init__(self, tokens: dict):
        self._tokens = tokens

    def tokens(self, eid):
        return self._tokens[eid]


def test_train_wmrl_refuses_the_held_out_decoder_before_any_ppo():
    from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy

    rng = np.random.default_rng(0)
    eids = {f"{t}_{i}": t for t in TASKS for i in range(2)}
    cache = _FakeCache({e: rng.standard_normal((12, N, D)).astype(np.float32) for e in eids})
    index = pd.DataFrame({"episode_id": list(eids), "task": list(eids.values()), "kind": "demo",
                          "action_dim": float(A), "height": 32})
    torch.manual_seed(0)
    policy = BCResNetPolicy(BCResNetConfig(image_size=16, action_dim=A, chunk=H, hidden=8, num_tasks=2,
                                           task_names=TASKS)).eval()
    params = {"episodes": {"n_labelled_per_task": 2, "n_val_per_task": 0, "max_actionless_per_task": 0},
              "env": {"num_envs": 2}}
    dec = _decoder()
    with pytest.raises(ValueError, match=r"never saw task\(s\) \['PokeCube-v1'\]"):
        train_wmrl(_ShiftWorldModel(), policy, cache, index, params, TASKS, seed=0, device="cpu", pixel_decoder=dec,
                   evaluation_params={"sim": {"image_size": None}},
                   pixel_decoder_training=_record(dec, ["PushT-v1"]))


def test_the_rl_pipeline_gives_wmrl_the_all_tasks_decoder(project_root):
    import yaml

    from rla_pipeline.pipelines.pixel_decoder.pipeline import create_pipeline as decoder_pipeline
    from rla_pipeline.pipelines.rl.pipeline import create_pipeline as rl_pipeline

    node = next(n for n in rl_pipeline().nodes if n.name == "train_wmrl_policy")
    assert node.inputs[-1] == "pixel_decoder_all_tasks_training"  # the last parameter, pixel_decoder_training
    assert "pixel_decoder_model_all_tasks" in node.inputs and "pixel_decoder_model" not in node.inputs
    made = next(n for n in decoder_pipeline().nodes if n.name == "train_pixel_decoder_all_tasks")
    assert made.outputs == ["pixel_decoder_model_all_tasks", "pixel_decoder_all_tasks_training"]
    catalog = yaml.safe_load((project_root / "conf/base/catalog_pixel_decoder.yml").read_text())
    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    outs = {o if isinstance(o, str) else next(iter(o)) for o in stages["pixel_decoder"]["outs"]}
    for name in made.outputs:  # each a file the pixel_decoder stage writes and the rl stage depends on
        path = catalog[name]["filepath"].replace("${globals:data_root}", "data")
        assert path in outs and path in stages["rl"]["deps"]
    assert "data/06_models/pixel_decoder.safetensors" not in stages["rl"]["deps"]
