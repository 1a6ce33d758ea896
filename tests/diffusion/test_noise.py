"""Noise processes: exact scores, and samplers driven by an exact score reproduce the data distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atomdiff.diffusion.noise import LatticeNoise, WrappedNormalNoise, wrapped_normal_score
from atomdiff.diffusion.noise.lattice import cell_to_log_gram, gram_from_log, log_gram_to_cell, unvech, vech


def test_wrapped_normal_score_is_gradient_of_log_density():
    x = torch.linspace(-0.49, 0.49, 37, dtype=torch.float64, requires_grad=True)
    for sigma in (0.02, 0.2, 0.6):
        k = torch.arange(-10, 11, dtype=torch.float64)
        logp = torch.logsumexp(-((x.unsqueeze(-1) + k) ** 2) / (2 * sigma**2), -1)
        (grad,) = torch.autograd.grad(logp.sum(), x)
        torch.testing.assert_close(wrapped_normal_score(x.detach(), torch.tensor(sigma, dtype=torch.float64)), grad)


def test_score_norm_matches_monte_carlo():
    noise = WrappedNormalNoise()
    gen = torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.1, 0.4):
        s = torch.tensor(sigma, dtype=torch.float64)
        d = torch.randn(200_000, generator=gen, dtype=torch.float64) * sigma
        mc = float(torch.sqrt((wrapped_normal_score(d, s) ** 2).mean()))
        assert float(noise.score_norm(s)) == pytest.approx(mc, rel=0.01)


@pytest.mark.parametrize("ode", [False, True])
def test_wrapped_sampler_with_exact_score_recovers_data(ode):
    """Data: wrapped normal around c with width s0; the exact score of the noised density drives the sampler."""
    noise = WrappedNormalNoise(0.005, 0.5)
    c, s0 = 0.3, 0.05
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(20_000, 1, generator=gen, dtype=torch.float64)
    steps = 400
    times = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    for k in range(steps):
        t, t_prev = float(times[k]), float(times[k + 1])
        width = math.sqrt(s0**2 + float(noise.sigma(torch.tensor(t))) ** 2)
        disp = torch.remainder(x - c + 0.5, 1.0) - 0.5
        score = wrapped_normal_score(disp, torch.tensor(width, dtype=torch.float64))
        x = noise.reverse_step(x, score, t, t - t_prev, gen, ode=ode)
    d = (torch.remainder(x - c + 0.5, 1.0) - 0.5).squeeze()
    assert float(d.mean()) == pytest.approx(0.0, abs=0.003)
    assert float(d.std()) == pytest.approx(math.sqrt(s0**2 + 0.005**2), rel=0.08)


@pytest.mark.parametrize("ode", [False, True])
def test_lattice_sampler_with_exact_noise_prediction_recovers_gaussian(ode):
    noise = LatticeNoise()
    m, s = torch.tensor([0.5, -1.0, 0.2, 0.0, 0.3, -0.2], dtype=torch.float64), 0.3
    gen = torch.Generator().manual_seed(2)
    x = noise.sample_prior(20_000, gen)
    steps = 200
    times = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    for k in range(steps):
        t, t_prev = float(times[k]), float(times[k + 1])
        ab = float(noise.alpha_bar(torch.tensor(t)))
        var = ab * s * s + 1 - ab
        eps = math.sqrt(1 - ab) * (x - math.sqrt(ab) * m) / var  # = −sqrt(1−ᾱ)·score
        x = noise.reverse_step(x, eps, t, t_prev, gen, ode=ode)
    torch.testing.assert_close(x.mean(0), m, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((6,), s, dtype=torch.float64), atol=0.02, rtol=0)


def test_lattice_parameterisation_is_rotation_invariant_and_invertible():
    rng = np.random.default_rng(0)
    cell = torch.as_tensor(np.diag([3.0, 4.0, 5.0]) + rng.normal(0, 0.5, (3, 3)))[None]
    n = torch.tensor([7])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = cell @ torch.as_tensor(q).T
    x = cell_to_log_gram(cell, n)
    torch.testing.assert_close(cell_to_log_gram(rotated, n), x)
    back = log_gram_to_cell(x, n)
    torch.testing.assert_close(back @ back.transpose(-1, -2), cell @ cell.transpose(-1, -2))
    torch.testing.assert_close(gram_from_log(x, n), cell @ cell.transpose(-1, -2))
    v = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(vech(unvech(v)), v)
    torch.testing.assert_close(torch.linalg.norm(v, dim=-1), torch.linalg.norm(unvech(v), dim=(-2, -1)))
    # any symmetric x decodes to a valid cell
    cells = log_gram_to_cell(torch.randn(50, 6, dtype=torch.float64) * 3, torch.full((50,), 4))
    assert (torch.linalg.det(cells) > 0).all()


def test_deterministic_lattice_step_stays_bounded_with_an_out_of_range_prediction():
    # a wild noise prediction is clamped through x0; the DDIM step must move along the noise consistent with
    # the clamped x0 (the raw one carried the blow-up on and made a cell's Gram matrix non-finite)
    noise = LatticeNoise()
    x = torch.zeros(2, 6, dtype=torch.float64)
    times = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    for k in range(10):
        eps = torch.full_like(x, -50.0)  # predicts x0 far beyond the clamp
        x = noise.reverse_step(x, eps, float(times[k]), float(times[k + 1]), ode=True)
        assert torch.isfinite(x).all() and x.abs().max() <= 6.0 + 1e-9
