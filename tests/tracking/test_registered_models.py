"""Trained models land in the MLflow Model Registry: a Kedro node trains a tiny RLA with the project's trainer, the
catalog saves it through TorchModelDataset inside a run opened by the project hook, and the registered version
loads with MLflow's API and with the project's loader to the same numbers, tagged with its lineage."""
from __future__ import annotations

import hashlib
import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

TINY_RLA = {"num_tokens": 4, "token_dim": 8, "width": 16, "heads": 2, "enc_depth": 1, "dec_depth": 1,
            "latent_tokens": 2, "latent_dim": 3}


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, tokens: np.ndarray):
        self.s = torch.tensor(tokens, dtype=torch.float32)  # (T, N, D), a copy

    def __len__(self):
        return len(self.s) - 1

    def __getitem__(self, i):
        return {"s_t": self.s[i], "s_th": self.s[i + 1]}


def train_tiny_rla(token_table: pd.DataFrame, rla_params: dict):
    """The node: a real (tiny) training with the project's trainer, which opens its own child run."""
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
    from rla_pipeline.training.trainer import TrainerConfig, train

    cfg = RLAConfig(**rla_params["model"])
    tokens = token_table.to_numpy(np.float32).reshape(-1, cfg.num_tokens, cfg.token_dim)
    model = ResidualLatentActionAutoencoder(cfg)
    train(model, lambda m, b: m.loss(b), _Pairs(tokens), None,
          TrainerConfig(run_name="rla", max_steps=3, batch_size=4, log_every=1, val_every=3, progress=False,
                        device="cpu"))
    return model


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _run_pipeline(tmp_path):
    """``kedro run`` without the CLI: the project hook around Kedro's own runner and catalog."""
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner
    from kedro_datasets.pandas import ParquetDataset

    from rla_pipeline.datasets.torch_model import TorchModelDataset
    from rla_pipeline.hooks import MlflowRunHook

    table = tmp_path / "tokens.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(12, 4 * 8)).astype(np.float32),
                 columns=[f"c{i}" for i in range(32)]).to_parquet(table)
    model_path = tmp_path / "06_models" / "rla.safetensors"
    catalog = DataCatalog({
        "token_table": ParquetDataset(filepath=str(table)),
        "params:rla": MemoryDataset({"model": TINY_RLA}),
        "rla_model": TorchModelDataset(filepath=str(model_path)),
    })
    pipe = Pipeline([node(train_tiny_rla, ["token_table", "params:rla"], "rla_model", name="train_rla")])
    hook = MlflowRunHook()
    hooks = _create_hook_manager()
    hooks.register(hook)
    hook.before_pipeline_run(run_params={"session_id": "s-reg", "pipeline_names": ["rla"]}, pipeline=pipe,
                             catalog=catalog)
    run_id = hook._run_id
    SequentialRunner().run(pipe, catalog, hooks)
    hook.after_pipeline_run()
    return run_id, model_path, table


def test_saved_model_is_registered_and_loads_with_mlflow_and_the_project_loader(mlflow_uri, tmp_path, monkeypatch,
                                                                                 project_root):
    from rla_pipeline.datasets.mlflow_model import load_registered
    from rla_pipeline.datasets.torch_model import TorchModelDataset

    monkeypatch.delenv("RLA_REGISTER_MODELS", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # loading must not need pickle
    run_id, model_path, table = _run_pipeline(tmp_path)

    client = MlflowClient(mlflow_uri)
    versions = client.search_model_versions("name = 'rla_pipeline.rla_model'")
    assert len(versions) == 1
    v = versions[0]
    assert v.run_id == run_id

    # lineage tags: git commit, node, DVC-style md5 of the input file and of the model file, trainer reuse key
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True).stdout.strip()
    tags = v.tags
    assert tags["git.commit"] == (head or "unknown")
    assert tags["git.dirty"] in ("true", "false")
    assert tags["kedro.node"] == "train_rla"
    assert tags["kedro.dataset"] == "rla_model"
    assert tags["model.class"] == "ResidualLatentActionAutoencoder"
    assert tags["model.md5"] == _md5(model_path)
    assert tags["input.token_table.md5"] == _md5(table)
    assert len(tags["input.params.sha256"]) == 16 and len(tags["inputs.md5"]) == 32
    trainer_runs = client.search_runs([client.get_run(run_id).info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(trainer_runs) == 1
    assert tags["trainer.config_hash"] == trainer_runs[0].data.tags["trainer.config_hash"]
    assert tags["training.run_ids"] == trainer_runs[0].info.run_id

    uri = f"models:/rla_pipeline.rla_model/{v.version}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    sig = pyfunc.metadata.signature
    assert [(s.name, s.shape) for s in sig.inputs.inputs] == [("s_t", (-1, 4, 8)), ("s_th", (-1, 4, 8))]
    assert {s.name: s.shape for s in sig.outputs.inputs} == {"s_th_pred": (-1, 4, 8), "z": (-1, 2, 3)}

    rng = np.random.default_rng(1)
    x = {"s_t": rng.normal(size=(3, 4, 8)).astype(np.float32), "s_th": rng.normal(size=(3, 4, 8)).astype(np.float32)}
    out = pyfunc.predict(x)
    project_model = TorchModelDataset(filepath=str(model_path)).load()  # the project's loader on the saved file
    with torch.no_grad():
        ref_pred, ref_z = project_model(torch.from_numpy(x["s_t"]), torch.from_numpy(x["s_th"]))
    np.testing.assert_array_equal(out["s_th_pred"], ref_pred.numpy())
    np.testing.assert_array_equal(out["z"], ref_z.numpy())

    # the nn.Module behind MLflow's API, and the registered file read by the project loader alone
    for net in (pyfunc.unwrap_python_model().model, load_registered("rla_pipeline.rla_model", v.version,
                                                                    dst=tmp_path / "dl")):
        assert type(net) is type(project_model)
        with torch.no_grad():
            pred, _ = net(torch.from_numpy(x["s_t"]), torch.from_numpy(x["s_th"]))
        np.testing.assert_array_equal(pred.numpy(), ref_pred.numpy())
    assert _md5(next((tmp_path / "dl").rglob("*.safetensors"))) == tags["model.md5"]


def test_registration_can_be_turned_off(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("RLA_REGISTER_MODELS", "0")
    _, model_path, _ = _run_pipeline(tmp_path)
    assert model_path.exists()  # the model is saved as before
    assert MlflowClient(mlflow_uri).search_registered_models() == []


def _tiny_models():
    from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig
    from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy, TokenPolicy, TokenPolicyConfig
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
    from rla_pipeline.models.world_model import (AbsoluteFlowWorldModel, DeterministicWorldModel, RLAWorldModel,
                                                 WorldModelConfig)

    rla = RLAConfig(**TINY_RLA)
    wm = dict(num_tokens=4, token_dim=8, action_dim=3, max_actions=5, width=16, cond_depth=1, flow_depth=1, depth=1,
              heads=2, action_embed_dim=8, sample_steps=2, rla=rla)
    return {
        "rla": ResidualLatentActionAutoencoder(rla),
        "rla_wm": RLAWorldModel(WorldModelConfig(**wm)),
        "deterministic": DeterministicWorldModel(WorldModelConfig(**wm)),
        "absolute_flow": AbsoluteFlowWorldModel(WorldModelConfig(**wm)),
        "pixel_decoder": PixelDecoder(PixelDecoderConfig(num_tokens=4, token_dim=8, image_size=8, channels=[8, 4],
                                                         groups=2)),
        "bc": BCResNetPolicy(BCResNetConfig(image_size=32, action_dim=3, chunk=2, proprio_dim=2, num_tasks=2,
                                            hidden=16, latent_tokens=2, latent_dim=3)),
        "token_policy": TokenPolicy(TokenPolicyConfig(num_tokens=4, token_dim=8, action_dim=3, chunk=2, hidden=16,
                                                      token_proj=2)),
    }


@pytest.mark.parametrize("kind", ["rla", "rla_wm", "deterministic", "absolute_flow", "pixel_decoder", "bc",
                                  "token_policy"])
def test_every_trained_model_class_gets_a_signature(kind):
    from rla_pipeline.datasets.mlflow_model import run_inference, signature_of

    model = _tiny_models()[kind].eval()
    sig = signature_of(model)
    assert sig is not None and sig.inputs.inputs and sig.outputs.inputs
    assert all(s.shape[0] == -1 for s in sig.inputs.inputs + sig.outputs.inputs)  # any batch size
    batch = {s.name: np.zeros((3, *s.shape[1:]), dtype=s.type) for s in sig.inputs.inputs}
    out = run_inference(model, batch, {"seed": 7})
    assert {k: v.shape[1:] for k, v in out.items()} == {s.name: s.shape[1:] for s in sig.outputs.inputs}
    assert all(v.shape[0] == 3 for v in out.values())
    again = run_inference(model, batch, {"seed": 7})  # flow models: the seed fixes the noise
    for k in out:
        np.testing.assert_array_equal(out[k], again[k])
