"""The shared trainer: it learns, schedules, clips, fails loudly, checkpoints, resumes exactly, and runs DDP."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from trainer_toy import (EpochRecordingDataset, NanAfter, RegressionDataset, make_model, mse_loss,
                         resume_config)

from rla_pipeline.training import checkpoint as ckpt
from rla_pipeline.training.schedules import lr_multiplier
from rla_pipeline.training.trainer import (CheckpointMismatchWarning, GlobalBatchSampler, NonFiniteLossError,
                                           TrainerConfig, epoch_order, mean_loss_metrics, train)

HERE = Path(__file__).resolve().parent


def cfg(**kw) -> TrainerConfig:
    base = dict(run_name="toy", max_steps=60, batch_size=16, lr=3e-3, log_every=10, val_every=20,
                checkpoint_every=1000, progress=False)
    base.update(kw)
    return TrainerConfig(**base)


def val_loss(model, ds) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=64)
    with torch.no_grad():
        return mean_loss_metrics(model.eval(), mse_loss, loader, lambda: torch.autocast("cpu", enabled=False))["loss"]


def test_learns_a_small_regression_and_records_history():
    train_ds, val_ds = RegressionDataset(512, seed=0), RegressionDataset(128, seed=1)
    model = make_model()
    start = val_loss(model, val_ds)
    result = train(model, mse_loss, train_ds, val_ds, cfg(max_steps=300, batch_size=32, lr=1e-2, val_every=100,
                                                         warmup_steps=20, log_every=25))
    assert result.model is model and not model.training
    assert result.resumed_from_step is None
    end = val_loss(model, val_ds)
    assert end < 0.15 * start, (start, end)
    assert result.final_val["loss"] == pytest.approx(end, rel=1e-4)
    assert set(result.final_val) >= {"loss", "mae"}
    h = result.history
    train_rows, val_rows = h[h.split == "train"], h[h.split == "val"]
    assert list(train_rows.step) == list(range(25, 301, 25))
    assert list(val_rows.step) == [100, 200, 300]
    assert {"loss", "mae", "lr", "grad_norm"} <= set(train_rows.columns)
    assert train_rows.loss.iloc[-1] < 0.3 * train_rows.loss.iloc[0]


def test_lr_schedule_shape():
    mult = [lr_multiplier(s, warmup_steps=5, max_steps=25, schedule="cosine") for s in range(25)]
    assert mult[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert mult[5] == 1.0  # cosine starts at the peak
    assert all(a > b for a, b in zip(mult[5:], mult[6:]))  # then strictly decreases
    assert mult[-1] < 0.01
    assert mult[15] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 20)))
    const = [lr_multiplier(s, warmup_steps=3, max_steps=10, schedule="constant") for s in range(10)]
    assert const == pytest.approx([1 / 3, 2 / 3, 1.0] + [1.0] * 7)
    # the trainer applies it: the lr logged for each update follows the multiplier
    result = train(make_model(), mse_loss, RegressionDataset(64), None,
                   cfg(max_steps=25, warmup_steps=5, log_every=1, lr=0.01))
    lrs = result.history[result.history.split == "train"].lr.to_numpy()
    assert lrs == pytest.approx([0.01 * m for m in mult])


def test_grad_clip_is_applied():
    seen: list[float] = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        clip = 0.05
        r = train(make_model(), mse_loss, RegressionDataset(64), None, cfg(max_steps=5, grad_clip=clip, log_every=1))
        clipped, seen[:] = list(seen), []
        train(make_model(), mse_loss, RegressionDataset(64), None, cfg(max_steps=5, grad_clip=None, log_every=1))
        unclipped = list(seen)
    finally:
        handle.remove()
    assert max(clipped) <= clip * (1 + 1e-5)
    assert min(unclipped) > clip  # the clip was really active
    assert (r.history.grad_norm > clip).all()  # history logs the norm before clipping


def test_nan_loss_raises_naming_the_step():
    with pytest.raises(NonFiniteLossError, match=r"at step 4\b"):
        train(make_model(), NanAfter(3), RegressionDataset(64), None, cfg(max_steps=10))


def test_callbacks_get_val_metrics_and_their_exception_propagates():
    calls = []

    class Stop(Exception):
        pass

    def cb(step, metrics):
        calls.append((step, dict(metrics)))
        if step == 20:
            raise Stop("pruned")

    with pytest.raises(Stop):
        train(make_model(), mse_loss, RegressionDataset(64), RegressionDataset(32, 1), cfg(val_every=10), callbacks=[cb])
    assert [s for s, _ in calls] == [10, 20]
    assert set(calls[0][1]) >= {"loss", "mae"}


def test_sampler_order_is_a_pure_function_and_shards_the_global_batch():
    assert torch.equal(epoch_order(5, 2, 50), epoch_order(5, 2, 50))
    assert not torch.equal(epoch_order(5, 2, 50), epoch_order(5, 3, 50))
    assert sorted(epoch_order(5, 2, 50).tolist()) == list(range(50))
    single = iter(GlobalBatchSampler(50, 8, seed=5))
    ranks = [iter(GlobalBatchSampler(50, 8, seed=5, rank=r, world_size=2)) for r in range(2)]
    for _ in range(14):  # 6 batches per epoch: crosses two epoch boundaries
        glob = next(single)
        assert next(ranks[0]) + next(ranks[1]) == glob
    # starting at a step continues exactly where a sampler that ran from 0 is
    a = iter(GlobalBatchSampler(50, 8, seed=5))
    for _ in range(9):
        next(a)
    assert next(iter(GlobalBatchSampler(50, 8, seed=5, start_step=9))) == next(a)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_set_epoch_is_called_before_each_epochs_items(num_workers):
    ds = EpochRecordingDataset(40)
    seen = []

    def loss(model, batch):
        seen.append((batch["epoch"].tolist(), batch["index"].tolist()))
        return mse_loss(model, batch)

    train(make_model(), loss, ds, None, cfg(max_steps=7, batch_size=16, num_workers=num_workers))  # 2 batches/epoch
    if num_workers == 0:
        assert ds.epochs == [0, 1, 2, 3]
    epochs_per_step = [set(e) for e, _ in seen]
    assert epochs_per_step == [{0}, {0}, {1}, {1}, {2}, {2}, {3}]
    assert [i for _, i in seen][2] == epoch_order(0, 1, 40)[:16].tolist()


def _final_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_kill9_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    ckdir = tmp_path / "ck"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "resume_worker.py"), str(ckdir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not (ckdir / "last.pt").exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    found = ckpt.load_latest(ckdir)  # loads with weights_only=True
    assert found is not None
    killed_at = found[1]["step"]
    assert 10 <= killed_at < 120 and not found[1]["complete"]
    torch.load(found[0], weights_only=True)  # tensors and plain containers only

    resumed = train(make_model(seed=123), mse_loss, RegressionDataset(), RegressionDataset(64, seed=9),
                    resume_config(ckdir))
    assert resumed.resumed_from_step == killed_at
    straight = train(make_model(), mse_loss, RegressionDataset(), RegressionDataset(64, seed=9), resume_config(None))
    a, b = _final_state(resumed.model), _final_state(straight.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    tr = lambda h: h[h.split == "train"].reset_index(drop=True)[["step", "loss", "lr", "grad_norm"]]  # noqa: E731
    pd.testing.assert_frame_equal(tr(resumed.history), tr(straight.history), atol=1e-6, rtol=0)

    # the checkpoint is now complete: a re-run returns the finished model without calling the loss
    calls = []

    def counting_loss(model, batch):
        calls.append(1)
        return mse_loss(model, batch)

    again = train(make_model(seed=7), mse_loss, RegressionDataset(), RegressionDataset(64, seed=9),
                  resume_config(ckdir), val_fn=lambda m, b: calls.append(1) or {})
    assert calls == [] and again.resumed_from_step == 120
    for k, v in again.model.state_dict().items():
        torch.testing.assert_close(v, a[k], rtol=0, atol=0)
    assert len(again.history) == len(resumed.history)


def test_checkpoint_of_another_config_is_set_aside_with_a_warning(tmp_path):
    ds = RegressionDataset(64)
    train(make_model(), mse_loss, ds, None, cfg(max_steps=6, checkpoint_every=3, checkpoint_dir=str(tmp_path)))
    with pytest.warns(CheckpointMismatchWarning, match="another config"):
        r = train(make_model(), mse_loss, ds, None, cfg(max_steps=6, lr=1e-3, checkpoint_every=3,
                                                         checkpoint_dir=str(tmp_path)))
    assert r.resumed_from_step is None
    assert len(list((tmp_path / "superseded").glob("*/last.pt"))) == 1


def test_interrupted_checkpoint_write_falls_back_to_prev(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"step": 1, "x": torch.ones(2)})
    ckpt.save_checkpoint(tmp_path, {"step": 2, "x": torch.ones(2)})
    assert ckpt.load_latest(tmp_path)[1]["step"] == 2
    assert ckpt.read_checkpoint(tmp_path / "prev.pt")["step"] == 1
    # killed mid-write: a partial temp file; killed between the renames: no last.pt
    (tmp_path / ".tmp-last.pt.abc.pt").write_bytes(b"partial")
    os.replace(tmp_path / "last.pt", tmp_path / "prev.pt")
    path, state = ckpt.load_latest(tmp_path)
    assert path.name == "prev.pt" and state["step"] == 2
    assert not list(tmp_path.glob(".tmp-*"))
    # a corrupt last.pt (never written by us, but e.g. a full disk) also falls back
    ckpt.save_checkpoint(tmp_path, {"step": 3})
    (tmp_path / "last.pt").write_bytes(b"garbage")
    assert ckpt.load_latest(tmp_path)[1]["step"] == 2


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    ds, val = RegressionDataset(128), RegressionDataset(32, seed=1)
    config = cfg(max_steps=25, batch_size=16, lr=1e-2, val_every=10, log_every=5, weight_decay=0.01)
    one = train(make_model(), mse_loss, ds, val, config)
    config2 = cfg(max_steps=25, batch_size=16, lr=1e-2, val_every=10, log_every=5, weight_decay=0.01,
                  num_processes=2, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=10)
    model2 = make_model()
    two = train(model2, mse_loss, ds, val, config2)
    assert two.model is model2 and not model2.training
    a, b = one.model.state_dict(), two.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)
    assert two.final_val["loss"] == pytest.approx(one.final_val["loss"], rel=1e-4)
    # metrics are means over the ranks, so the history matches too
    pd.testing.assert_frame_equal(two.history, one.history, atol=1e-5, rtol=0)
    state = ckpt.read_checkpoint(tmp_path / "ck" / "last.pt")  # only rank 0 wrote it
    assert state["complete"] and len(state["rng"]) == 2
