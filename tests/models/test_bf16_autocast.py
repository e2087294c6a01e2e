"""The bf16 mixed-precision path (the paper configs' ``amp: bf16``), run on the CPU: CPU autocast supports bf16.

Each model's forward + loss + backward under ``torch.autocast("cpu", dtype=torch.bfloat16)``: the matmuls must
really run in bf16 (else the test proves nothing), the loss must be finite and float32-accumulated where the code
asks for it, and every trainable parameter must get a finite, non-zero gradient. Then the trainer's own AMP path
(``TrainerConfig(amp="bf16")``) trains a model a few steps on the CPU.
"""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.models.policy import TokenPolicy, TokenPolicyConfig
from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder, rla_loss, token_stats
from rla_pipeline.models.world_model import (
    AbsoluteFlowWorldModel,
    DeterministicWorldModel,
    RLAWorldModel,
    WorldModelConfig,
    world_model_loss,
)

N, D, A, H = 16, 48, 4, 5
RLA = RLAConfig(num_tokens=N, token_dim=D, width=32, enc_depth=1, dec_depth=1, heads=2, latent_tokens=4, latent_dim=3)


def _batch(B=6):
    g = torch.Generator().manual_seed(0)
    s_t = 2.0 + 3.0 * torch.randn(B, N, D, generator=g)
    return {"s_t": s_t, "s_th": s_t + torch.randn(B, N, D, generator=g),
            "actions": torch.randn(B, H, A, generator=g), "action_mask": torch.ones(B, H, dtype=torch.bool)}


def _rla():
    torch.manual_seed(0)
    m = ResidualLatentActionAutoencoder(RLA)
    m.set_token_stats(*token_stats(_batch()["s_t"]))
    return m


def _wm(cls):
    torch.manual_seed(0)
    c = WorldModelConfig(num_tokens=N, token_dim=D, action_dim=A, max_actions=H, width=32, cond_depth=1,
                         flow_depth=1, depth=2, heads=2, sample_steps=3, rla=RLA)
    m = cls(c, rla=_rla()) if cls is RLAWorldModel else cls(c)
    m.set_stats(*token_stats(_batch()["s_t"]))
    return m


def _token_policy(batch):
    torch.manual_seed(0)
    policy = TokenPolicy(TokenPolicyConfig(num_tokens=N, token_dim=D, action_dim=A, chunk=H, hidden=32))

    def loss_fn(model, b):
        dist = model.distribution(b["s_t"])
        return -dist.log_prob(b["actions"].flatten(1)).sum(-1).mean() + model.value(b["s_t"]).pow(2).mean(), {}
    return policy, loss_fn


CASES = {
    "rla": lambda b: (_rla(), rla_loss),
    "rla_wm": lambda b: (_wm(RLAWorldModel), world_model_loss),
    "deterministic": lambda b: (_wm(DeterministicWorldModel), world_model_loss),
    "absolute_flow": lambda b: (_wm(AbsoluteFlowWorldModel), world_model_loss),
    "token_policy": _token_policy,
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_loss_backward_under_cpu_bf16_autocast(name):
    b = _batch()
    model, loss_fn = CASES[name](b)
    # one step of training first, so that the zero-initialised output layers pass gradient to everything behind them
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss_fn(model, b)[0].backward()
    opt.step()
    opt.zero_grad()

    seen_dtypes = set()
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen_dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = loss_fn(model, b)
    for h in hooks:
        h.remove()
    assert torch.bfloat16 in seen_dtypes, "autocast did not reach the model's linear layers"
    assert torch.isfinite(loss) and loss.dim() == 0
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient under bf16: {no_grad}"
    assert sum(float(p.grad.abs().sum()) for p in trainable.values()) > 0
    if name == "rla_wm":  # the frozen decoder stays frozen under autocast too
        assert all(p.grad is None for p in model.rla.parameters())
    # sampling under autocast returns finite float32 tokens (the flow's Euler loop included)
    if name in ("rla_wm", "deterministic", "absolute_flow"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model.predict_next(b["s_t"], b["actions"], b["action_mask"])
        assert pred.shape == (6, N, D) and torch.isfinite(pred).all()


def test_trainer_bf16_amp_on_cpu():
    """The trainer's public AMP switch (amp="bf16") on the CPU: the loss falls and stays finite."""
    from rla_pipeline.training.trainer import TrainerConfig, train

    g = torch.Generator().manual_seed(1)
    # tokens in an 8-dim span (as real tokens' variance concentrates in few directions): learnable in 40 steps by
    # the no-skip decoder, which must rebuild s_t from its transformer's outputs (it has no path that copies s_t)
    s_t = 2.0 + 3.0 * torch.randn(64, N, 8, generator=g) @ torch.randn(8, D, generator=g) / 8 ** 0.5
    data = [{"s_t": s_t[i], "s_th": s_t[i] + 0.3 * torch.randn(N, D, generator=g)} for i in range(64)]
    model = _rla()
    cfg = TrainerConfig(run_name="bf16_cpu", max_steps=40, batch_size=16, lr=3e-3, amp="bf16", device="cpu",
                        log_every=10, val_every=40, checkpoint_every=40, progress=False)
    result = train(model, rla_loss, data, data[:16], config=cfg)
    rows = result.history[result.history.split == "train"]
    assert rows["loss"].notna().all() and (rows["loss"] < float("inf")).all()
    assert rows["loss"].iloc[-1] < 0.8 * rows["loss"].iloc[0], rows["loss"].tolist()
    assert torch.isfinite(torch.tensor(result.final_val["loss"]))
