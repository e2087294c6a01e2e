"""Safe reuse of trainer checkpoints (issue 11 item 4): a finished checkpoint comes back only when everything that
shaped it matches (loss settings, model source code, ...), the log says which part changed, and the key is the
same in another process and in another clone of the code."""
from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rla_pipeline.training.resume import KEY_FILE, config_fingerprint
from rla_pipeline.training.trainer import CheckpointMismatchWarning, TrainerConfig, train
from rla_pipeline.utils.hashing import canonical
from trainer_toy import RegressionDataset, make_model

SRC = Path(__file__).resolve().parents[2] / "src"


def weighted_mse(model, batch, weight: float = 1.0):
    pred = model(batch["x"])
    loss = weight * F.mse_loss(pred, batch["y"])
    return loss, {"mse": float(loss.detach())}


@dataclasses.dataclass
class WeightedLoss:
    """A loss object whose setting (``latent_weight``) changes the result, like ``GroupedBCLoss(BCLoss(...))``."""

    latent_weight: float = 0.5

    def __call__(self, model, batch):
        return weighted_mse(model, batch, 1.0 + self.latent_weight)


class PlainLoss:
    """A loss object that is not a dataclass: its attributes are its settings."""

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, model, batch):
        return weighted_mse(model, batch, self.weight)


def cfg(ckdir, **kw) -> TrainerConfig:
    base = dict(run_name="reuse", max_steps=4, batch_size=16, lr=1e-3, log_every=2, val_every=100,
                checkpoint_every=2, checkpoint_dir=str(ckdir), device="cpu", progress=False)
    return TrainerConfig(**{**base, **kw})


def _run(loss_fn, ckdir, model=None):
    return train(model if model is not None else make_model(), loss_fn, RegressionDataset(64), None, cfg(ckdir))


@pytest.mark.parametrize("first, second", [
    (functools.partial(weighted_mse, weight=1.0), functools.partial(weighted_mse, weight=2.0)),
    (WeightedLoss(0.5), WeightedLoss(0.0)),
    (PlainLoss(1.0), PlainLoss(3.0)),
], ids=["partial-keyword", "dataclass-weight", "object-attribute"])
def test_changing_a_loss_setting_retrains_and_the_log_says_loss(tmp_path, caplog, first, second):
    assert _run(first, tmp_path).resumed_from_step is None
    # same settings (a new but equal object): the finished checkpoint is reused
    again = _run(functools.partial(first.func, *first.args, **first.keywords) if isinstance(first, functools.partial)
                 else dataclasses.replace(first) if dataclasses.is_dataclass(first) else PlainLoss(first.weight),
                 tmp_path)
    assert again.resumed_from_step == 4
    with caplog.at_level(logging.WARNING), pytest.warns(CheckpointMismatchWarning, match=r"changed: loss\)"):
        other = _run(second, tmp_path)
    assert other.resumed_from_step is None  # trained again, not the old weights
    assert "changed: loss)" in caplog.text
    assert (tmp_path / KEY_FILE).exists() and len(list((tmp_path / "superseded").glob("*/last.pt"))) == 1


MODEL_SOURCE = '''
from dataclasses import dataclass

import torch.nn as nn


@dataclass
class EditedConfig:
    hidden: int = 8


class EditedModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.a = nn.Linear(4, config.hidden)
        self.b = nn.Linear(config.hidden, 1)

    def forward(self, x):
        return self.b(ACT(self.a(x)))
'''


def _model_module(folder: Path, name: str, body: str):
    (folder / f"{name}.py").write_text(body)
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


def test_editing_the_model_source_retrains_and_names_the_file(tmp_path, caplog, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.syspath_prepend(str(code))
    name = "reuse_edited_model"
    ckdir = tmp_path / "ck"

    def run(body):
        importlib.invalidate_caches()
        mod = _model_module(code, name, body)
        torch.manual_seed(0)
        return _run(weighted_mse, ckdir, model=mod.EditedModel(mod.EditedConfig()))

    try:
        assert run(MODEL_SOURCE.replace("ACT(", "torch.tanh(").replace("import torch.nn", "import torch\nimport torch.nn")
                   ).resumed_from_step is None
        # a comment and blank lines only: the code is the same, the finished checkpoint is reused
        same = MODEL_SOURCE.replace("ACT(", "torch.tanh(").replace("import torch.nn", "import torch\nimport torch.nn")
        assert run("# a comment\n\n" + same).resumed_from_step == 4
        # the fix of a model file (another activation, same class, config and parameter shapes): retrains
        fixed = MODEL_SOURCE.replace("ACT(", "torch.relu(").replace("import torch.nn", "import torch\nimport torch.nn")
        with caplog.at_level(logging.WARNING), pytest.warns(CheckpointMismatchWarning, match="sources"):
            assert run(fixed).resumed_from_step is None
        assert f"changed: sources ({name}.py)" in caplog.text
    finally:
        sys.modules.pop(name, None)


def test_key_holds_model_loss_and_training_sources():
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder, rla_loss

    model = ResidualLatentActionAutoencoder(RLAConfig(num_tokens=4, token_dim=8, width=16, enc_depth=1,
                                                      dec_depth=1, heads=2, latent_tokens=2, latent_dim=4))
    fp = config_fingerprint(cfg(None), model, functools.partial(rla_loss), 10)
    files = set(fp["sources"])
    assert {"rla_pipeline/models/rla.py", "rla_pipeline/models/blocks.py", "rla_pipeline/training/loop.py",
            "rla_pipeline/training/trainer.py"} <= files
    assert not any(f.startswith("/") for f in files)  # relative names: clones in other folders agree


def test_canonical_settings_hold_no_memory_address():
    class Opaque:
        __slots__ = ()

    text = repr(canonical({"loss": Opaque(), "f": functools.partial(weighted_mse, weight=2.0),
                           "lam": (lambda m, b, w=3: None)}))
    assert "0x" not in text and "'weight': 2.0" in text and "[3]" in text


KEY_SCRIPT = textwrap.dedent('''
    import functools, sys
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder, rla_loss
    from rla_pipeline.training.resume import config_hash
    from rla_pipeline.training.trainer import TrainerConfig
    import torch
    from torch.utils.data import TensorDataset
    torch.manual_seed(0)
    model = ResidualLatentActionAutoencoder(RLAConfig(num_tokens=4, token_dim=8, width=16, enc_depth=1, dec_depth=1,
                                                      heads=2, latent_tokens=2, latent_dim=4))
    cfg = TrainerConfig(run_name="k", max_steps=3, batch_size=2, checkpoint_dir=None)
    loss = functools.partial(rla_loss)
    print("KEY", config_hash(cfg, model, loss, TensorDataset(torch.zeros(8, 1))))
''')


def _key_in_clone(src_root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(src_root), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", KEY_SCRIPT], capture_output=True, text=True, env=env, timeout=300,
                         cwd=src_root)
    assert res.returncode == 0, res.stderr[-3000:]
    return [line for line in res.stdout.splitlines() if line.startswith("KEY ")][0].split()[1]


def test_same_inputs_same_key_in_other_processes_and_clones_and_a_source_edit_changes_it(tmp_path):
    a, b = tmp_path / "clone_a" / "src", tmp_path / "elsewhere" / "clone_b" / "src"
    for dest in (a, b):
        shutil.copytree(SRC / "rla_pipeline", dest / "rla_pipeline",
                        ignore=shutil.ignore_patterns("__pycache__"))
    key_a, key_b = _key_in_clone(a), _key_in_clone(b)
    assert key_a == key_b  # two processes, two folders: one key
    with open(a / "rla_pipeline" / "models" / "blocks.py", "a") as fh:
        fh.write("\n_EDITED = 1  # a code change in a file the RLA model imports\n")
    assert _key_in_clone(a) != key_b
