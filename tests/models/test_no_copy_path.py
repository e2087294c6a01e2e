""""No skip" and "direct" mean it: those state predictors have no path that copies s_t into their output.

The RLA decoder (``decoder_skip: false``, the paper's) and the deterministic world model (``predict_residual:
false``, the direct baseline) must produce their prediction from the transformer's outputs alone; s_t may enter only
as the transformer's input. A learned gate or skip on s_t would let them copy it, and "beats copy" / "the residual
parametrisation does not help" would then compare initialisations, not designs.

The crisp check: give every parameter a random (non-zero) value, so no path hides behind a zero initialisation, then
cut s_t's input projection into the transformer. A model without a copy path then gives the same output for any s_t;
its residual variant gives exactly s_t + that same s_t-independent output. Before the cut, the output does depend on
s_t (so the check can see a dependence when there is one).
"""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
from rla_pipeline.models.world_model import DeterministicWorldModel, WorldModelConfig

B, N, D, A, H = 3, 4, 12, 3, 5
RLA = dict(num_tokens=N, token_dim=D, width=8, enc_depth=1, dec_depth=2, heads=2, mlp_ratio=2.0, latent_tokens=2,
           latent_dim=3)
WM = dict(num_tokens=N, token_dim=D, action_dim=A, max_actions=H, width=8, depth=2, heads=2, mlp_ratio=2.0,
          action_embed_dim=4)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter to a random non-zero value: zero-initialised layers (gates, output layers) are live."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def _two_states():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, N, D, generator=g), 3.0 * torch.randn(B, N, D, generator=g) + 1.0


def _rla(skip: bool) -> ResidualLatentActionAutoencoder:
    torch.manual_seed(0)
    return _randomise(ResidualLatentActionAutoencoder(RLAConfig(**RLA, decoder_skip=skip)))


def _rla_decode(model, s_t):
    z = torch.randn(B, RLA["latent_tokens"], RLA["latent_dim"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model.decode_normalised(s_t, z)


def _cut_rla_input(model) -> None:
    with torch.no_grad():
        model.dec_s_in.weight.zero_()
        model.dec_s_in.bias.zero_()


def _wm(residual: bool) -> DeterministicWorldModel:
    torch.manual_seed(0)
    return _randomise(DeterministicWorldModel(WorldModelConfig(**WM, predict_residual=residual)))


def _wm_predict(model, s_t):
    g = torch.Generator().manual_seed(3)
    actions, mask = torch.randn(B, H, A, generator=g), torch.ones(B, H, dtype=torch.bool)
    with torch.no_grad():
        return model._predict_normalised(s_t, actions, mask)  # normalised in and out (stats are 0 / 1 here)


def _cut_wm_input(model) -> None:
    with torch.no_grad():
        model.inp.weight[:, :D].zero_()  # the s_t columns of the [s_t ; action] input projection


CASES = {  # name -> (build(residual), predict(model, s_t), cut s_t's input into the transformer)
    "rla_decoder": (_rla, _rla_decode, _cut_rla_input),
    "deterministic": (_wm, _wm_predict, _cut_wm_input),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_prediction_has_no_copy_path(name):
    """No skip / direct: with s_t cut from the transformer's input, the output does not depend on s_t at all."""
    build, predict, cut = CASES[name]
    model = build(False)
    s1, s2 = _two_states()
    assert not torch.allclose(predict(model, s1), predict(model, s2), atol=1e-3), "s_t must reach the transformer"
    cut(model)
    out1, out2 = predict(model, s1), predict(model, s2)
    assert out1.abs().max() > 1e-2  # not trivially zero
    torch.testing.assert_close(out1, out2, rtol=0, atol=1e-5, msg=f"{name}: s_t reaches the output past the "
                               "transformer (a gate or skip copies it)")


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_prediction_gradient_to_s_t_goes_through_the_transformer_only(name):
    """The same as a gradient: with s_t cut from the transformer's input, d output / d s_t is exactly zero."""
    build, predict, cut = CASES[name]
    model = build(False)
    cut(model)
    s_t = _two_states()[0].requires_grad_(True)
    with torch.enable_grad():
        if name == "rla_decoder":
            z = torch.randn(B, RLA["latent_tokens"], RLA["latent_dim"])
            out = model.decode_normalised(s_t, z)
        else:
            out = model._predict_normalised(s_t, torch.randn(B, H, A), torch.ones(B, H, dtype=torch.bool))
        (grad,) = torch.autograd.grad(out.square().sum(), s_t, allow_unused=True)
    assert grad is None or float(grad.abs().max()) == 0.0, (
        f"{name}: d output / d s_t = {float(grad.abs().max()):.3g} with s_t cut from the transformer's input")


@pytest.mark.parametrize("name", sorted(CASES))
def test_residual_variant_is_s_t_plus_the_direct_readout(name):
    """Residual (decoder_skip / predict_residual): exactly s_t + an output that, cut from s_t, is s_t-independent;
    and the same weights give the direct variant's output plus s_t (the two differ only by the skip)."""
    build, predict, cut = CASES[name]
    residual, direct = build(True), build(False)
    direct.load_state_dict(residual.state_dict())  # same parameters: the skip is not a parameter
    s1, s2 = _two_states()
    torch.testing.assert_close(predict(residual, s1), s1 + predict(direct, s1))
    cut(residual)
    torch.testing.assert_close(predict(residual, s1) - s1, predict(residual, s2) - s2, rtol=0, atol=1e-5)


def test_no_state_predictor_has_an_input_gate():
    """Structure: the state predictors' readouts have no gate on s_t (only flow transformers gate their x_t)."""
    for skip in (False, True):
        assert ResidualLatentActionAutoencoder(RLAConfig(**RLA, decoder_skip=skip)).dec_out.gate is None
    for residual in (False, True):
        assert DeterministicWorldModel(WorldModelConfig(**WM, predict_residual=residual)).out.gate is None
