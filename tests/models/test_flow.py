"""Flow schedule direction and the Euler sampler recovering a known distribution."""
import torch
import torch.nn as nn

from rla_pipeline.models.flow import euler_sample, flow_matching_loss, interpolate, sample_time


def test_interpolation_endpoints_and_velocity_is_time_derivative():
    x0, n = torch.randn(4, 3), torch.randn(4, 3)
    x_at_0, v = interpolate(x0, n, torch.zeros(4))
    x_at_1, _ = interpolate(x0, n, torch.ones(4))
    assert torch.allclose(x_at_0, x0 + 1e-5 * n, atol=1e-6)  # t=0 is data
    assert torch.allclose(x_at_1, n, atol=1e-6)  # t=1 is noise
    t, eps = torch.full((4,), 0.3), 1e-3
    xa, _ = interpolate(x0, n, t)
    xb, _ = interpolate(x0, n, t + eps)
    assert torch.allclose((xb - xa) / eps, v, atol=1e-3)


def test_euler_with_exact_velocity_maps_noise_to_data():
    x0 = torch.tensor([[2.0, -1.0]])
    n = torch.randn(1, 2)
    # for a single data point the exact velocity field along the path is constant
    v = lambda x, t: (1 - 1e-5) * n - x0
    out = euler_sample(v, interpolate(x0, n, torch.ones(1))[0], steps=7)
    assert torch.allclose(out, x0, atol=1e-4)


def test_logit_normal_times_in_unit_interval():
    t = sample_time(1000, torch.Generator().manual_seed(0))
    assert (t > 0).all() and (t < 1).all() and abs(float(t.median()) - 0.5) < 0.05


def test_sampler_recovers_shifted_gaussian_after_short_training():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mean, std = torch.tensor([3.0, -2.0]), torch.tensor([0.5, 1.5])
    net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))
    vel = lambda x, t: net(torch.cat([x, t[:, None]], dim=-1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(1500):
        x0 = mean + std * torch.randn(256, 2, generator=g)
        loss = flow_matching_loss(vel, x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = euler_sample(vel, torch.randn(4000, 2, generator=g), steps=30)
    assert torch.allclose(samples.mean(0), mean, atol=0.15), samples.mean(0)
    assert torch.allclose(samples.std(0), std, atol=0.2), samples.std(0)
