"""Controls for BC+RLA's latent targets (rl/bc_controls.py): an untrained RLA and shuffled z."""
import numpy as np
import pytest
import torch

from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
from rla_pipeline.rl.bc_controls import shuffled_z, untrained_like


def _trained_rla():
    torch.manual_seed(0)
    m = ResidualLatentActionAutoencoder(RLAConfig(num_tokens=4, token_dim=8, width=16, enc_depth=1, dec_depth=1,
                                                  heads=2, latent_tokens=2, latent_dim=3))
    with torch.no_grad():  # "training": every weight moved away from its initial draw, buffers set
        for p in m.parameters():
            p.add_(torch.randn_like(p))
        params = {k for k, _ in m.named_parameters()}
        for k, b in m.state_dict().items():
            if k not in params:  # persistent buffers: the token statistics
                b.add_(1.5)
    return m


def test_untrained_like_redraws_every_weight_and_keeps_buffers():
    rla = _trained_rla()
    fresh = untrained_like(rla, seed=0)
    trained = dict(rla.named_parameters())
    same = [k for k, p in fresh.named_parameters() if torch.equal(p, trained[k])]
    assert same == []  # not one trained weight survives (positional embeddings included)
    saved = {k for k in rla.state_dict() if k not in trained}  # persistent buffers (token statistics)
    assert saved and all(torch.equal(fresh.state_dict()[k], rla.state_dict()[k]) for k in saved)
    s, s2 = torch.randn(5, 4, 8), torch.randn(5, 4, 8)
    z, z0 = fresh.encode(s, s2), rla.encode(s, s2)
    assert z.shape == z0.shape and not torch.allclose(z, z0)
    assert torch.equal(untrained_like(rla, seed=0).encode(s, s2), z)  # seeded


def test_shuffled_z_gives_each_episode_another_episode_of_its_task_at_its_own_length():
    lengths = {"a0": 5, "a1": 7, "a2": 4, "b0": 6, "b1": 6, "c0": 3}
    task_of = {"a0": "A", "a1": "A", "a2": "A", "b0": "B", "b1": "B", "c0": "C"}
    z_of = lambda e: torch.full((lengths[e], 2, 3), float(list(lengths).index(e))) + torch.arange(  # noqa: E731
        lengths[e]).view(-1, 1, 1) / 100
    z = shuffled_z(z_of, list(lengths), task_of, lengths.__getitem__, seed=0)
    for e in lengths:
        out = z(e)
        assert out.shape == z_of(e).shape
        d = z.donor[e]
        assert task_of[d] == task_of[e]
        if e != "c0":
            assert d != e and not torch.equal(out, z_of(e))
    assert sorted(z.donor[e] for e in ("a0", "a1", "a2")) == ["a0", "a1", "a2"]  # a permutation of the task
    assert torch.equal(z("c0"), z_of("c0").flip(0))  # alone in its task: its own z reversed in time
    # a shorter donor is padded with its last row; a longer one cut
    for e in lengths:
        zd = z_of(z.donor[e])
        n = min(len(zd), lengths[e])
        assert torch.equal(z(e)[:n], (zd if z.donor[e] != e else zd.flip(0))[:n])
        if len(zd) < lengths[e]:
            assert torch.equal(z(e)[n:], zd[-1:].expand(lengths[e] - n, 2, 3))
    assert {e: z.donor[e] for e in lengths} == shuffled_z(z_of, list(lengths), task_of, lengths.__getitem__, seed=0).donor
