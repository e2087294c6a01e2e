"""``rl/bc.py``: action chunks, BC datasets and losses; the BC loss falls with the shared trainer, the latent head trains.

Save/load of the policies is swept with every other model in ``tests/models/test_save_load.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy, TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.bc import BCLoss, ImageChunkDataset, TokenBCLoss, TokenChunkDataset, sliding_action_chunks
from rla_pipeline.training.trainer import TrainerConfig, train


def _episodes(n_eps=4, T=6, S=32, with_actions=True, z_shape=None, seed=0):
    """Episodes whose frames say which action to take: bright frames -> +0.5 actions, dark -> -0.5."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n_eps):
        bright = i % 2 == 0
        frames = rng.integers(150, 255, (T, S, S, 3)) if bright else rng.integers(0, 100, (T, S, S, 3))
        sign = 0.5 if bright else -0.5
        eps.append({
            "frames": torch.from_numpy(frames.astype(np.uint8)),
            "actions": np.full((T, 3), sign, np.float32) if with_actions else None,
            "z": None if z_shape is None else np.full((T, *z_shape), 2 * sign, np.float32),
            "task": i % 2,
        })
    return eps


def _trainer_cfg(name, steps, lr=1e-3):
    return TrainerConfig(run_name=name, max_steps=steps, batch_size=8, lr=lr, log_every=5, val_every=1000,
                         checkpoint_every=1000, device="cpu", progress=False, schedule="constant")


def test_sliding_action_chunks_pad_and_mask():
    chunks, mask = sliding_action_chunks(np.arange(6, dtype=np.float32).reshape(3, 2), chunk=2)
    assert chunks.shape == (3, 2, 2) and mask.tolist() == [[True, True], [True, True], [True, False]]
    assert chunks[2, 1].tolist() == [0.0, 0.0] and chunks[1, 1].tolist() == [4.0, 5.0]


def test_bc_loss_falls_on_tiny_batch():
    torch.manual_seed(0)
    policy = BCResNetPolicy(BCResNetConfig(backbone="resnet10t", image_size=32, action_dim=3, chunk=2, hidden=32,
                                           num_tasks=2))
    ds = ImageChunkDataset(_episodes(), chunk=2, action_dim=3)
    loss_fn = BCLoss(random_shift=2)
    policy.eval()
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    with torch.no_grad():
        before = float(loss_fn(policy, batch)[0])
    result = train(policy, loss_fn, ds, None, _trainer_cfg("bc-test", 40))
    after = float(loss_fn(result.model, batch)[0])
    assert after < 0.3 * before, (before, after)
    out = result.model.act(batch["image"][:2], task=batch["task"][:2])
    assert out.shape == (2, 2, 3)


def test_latent_head_trains_from_actionless_frames_only():
    torch.manual_seed(0)
    policy = BCResNetPolicy(BCResNetConfig(backbone="resnet10t", image_size=32, action_dim=3, chunk=2, hidden=32,
                                           latent_tokens=2, latent_dim=3))
    ds = ImageChunkDataset(_episodes(with_actions=False, z_shape=(2, 3)), chunk=2, action_dim=3, latent_shape=(2, 3))
    assert ds.num_labelled == 0 and ds.num_unlabelled == 24
    loss_fn = BCLoss(latent_l1_weight=1.0, latent_mse_weight=1.0, random_shift=0)
    head_before = policy.action_head.weight.detach().clone()
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    policy.eval()
    _, m0 = loss_fn(policy, batch)
    result = train(policy, loss_fn, ds, None, _trainer_cfg("latent-test", 40))
    _, m1 = loss_fn(result.model, batch)
    assert "action_loss" not in m1  # no labels: the action head gets no loss ...
    assert torch.equal(result.model.action_head.weight, head_before)  # ... and does not move
    assert m1["latent_mse"] < 0.3 * m0["latent_mse"], (m0, m1)


def test_labelled_fraction_repeats_labelled_frames():
    eps = _episodes(n_eps=2, T=4) + _episodes(n_eps=6, T=4, with_actions=False, z_shape=(1, 1), seed=1)
    ds = ImageChunkDataset(eps, chunk=2, action_dim=3, labelled_fraction=0.5, latent_shape=(1, 1))
    labelled = sum(bool(ds[i]["action_mask"].any()) for i in range(len(ds)))
    assert labelled / len(ds) >= 0.5


def test_token_policy_shapes_and_bc():
    torch.manual_seed(0)
    N, D, A, H = 4, 8, 3, 2
    policy = TokenPolicy(TokenPolicyConfig(num_tokens=N, token_dim=D, action_dim=A, chunk=H, token_proj=4, hidden=32))
    tok = torch.randn(5, N, D)
    assert policy.act(tok).shape == (5, H, A) and policy.value(tok).shape == (5,)
    dist = policy.distribution(tok)
    assert dist.mean.shape == (5, H * A)
    with pytest.raises(ValueError):
        policy.act(torch.randn(5, N + 1, D))
    seqs = [np.random.default_rng(i).normal(size=(6, N, D)).astype(np.float16) for i in range(4)]
    acts = [np.full((6, A), 0.3 * (i - 1.5), np.float32) for i in range(4)]
    ds = TokenChunkDataset(seqs, acts, [0] * 4, chunk=H, action_dim=A)
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    before = float(TokenBCLoss()(policy.eval(), batch)[0])
    result = train(policy, TokenBCLoss(), ds, None, _trainer_cfg("token-bc-test", 60, lr=3e-3))
    assert float(TokenBCLoss()(result.model, batch)[0]) < 0.3 * before


def test_select_episodes_keeps_validation_for_tasks_with_fewer_demos():
    """One setting for tasks with different demo counts: a task with fewer demos than labelled + val keeps its val
    demos and labels the rest; a task with more labels n_labelled and passes the rest on as actionless."""
    import pandas as pd

    from rla_pipeline.rl.bc import select_episodes

    rows = [{"episode_id": f"A-demo-{i:02d}", "task": "A", "kind": "demo", "action_dim": 4} for i in range(7)]
    rows += [{"episode_id": f"B-demo-{i:02d}", "task": "B", "kind": "demo", "action_dim": 4} for i in range(34)]
    rows += [{"episode_id": "C-demo-00", "task": "C", "kind": "demo", "action_dim": 4}]
    sel = select_episodes(pd.DataFrame(rows), ["A", "B", "C"], n_labelled=30, n_val=2, max_actionless=10)
    lab = lambda t: [e for e in sel.labelled if e.startswith(t)]  # noqa: E731
    val = lambda t: [e for e in sel.val if e.startswith(t)]  # noqa: E731
    assert len(lab("A")) == 5 and val("A") == ["A-demo-05", "A-demo-06"]
    assert len(lab("B")) == 30 and val("B") == ["B-demo-30", "B-demo-31"]
    assert [e for e in sel.actionless if e.startswith("B")] == ["B-demo-32", "B-demo-33"]
    assert lab("C") == ["C-demo-00"] and val("C") == []  # one demo: it is labelled, nothing to validate on
    assert not set(sel.labelled) & set(sel.val)
