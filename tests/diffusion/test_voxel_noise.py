"""Gaussian noise on voxel grids: marginals, targets, and reverse steps that are exact given the true noise."""

from __future__ import annotations

import pytest
import torch

from atomdiff.diffusion.noise.voxel import VoxelNoise
from atomdiff.errors import InputError


def _x0() -> torch.Tensor:
    torch.manual_seed(0)
    return VoxelNoise().encode(torch.rand(3, 2, 4, 4, 4, dtype=torch.float64))


def test_standardisation_round_trip_and_range():
    noise = VoxelNoise()
    f = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(noise.encode(f), torch.tensor([-1.0, 1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(noise.decode(noise.encode(f)), f)
    assert noise.x_range == (-1.0, 3.0)


def test_marginal_matches_the_schedule():
    noise = VoxelNoise()
    x0 = torch.zeros(5000, 1, 2, 2, 2, dtype=torch.float64) + 0.7
    t = torch.full((5000,), 0.5, dtype=torch.float64)
    x_t, eps = noise.sample_marginal(x0, t, torch.Generator().manual_seed(0))
    ab = float(noise.alpha_bar(0.5))
    assert x_t.mean().item() == pytest.approx(ab**0.5 * 0.7, abs=0.02)  # 4 standard errors
    assert x_t.std().item() == pytest.approx((1 - ab) ** 0.5, abs=0.01)
    assert noise.alpha_bar(0.0).item() == pytest.approx(1.0)
    assert noise.alpha_bar(1.0).item() < 1e-5


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_exact_output_denoises_exactly(prediction):
    noise = VoxelNoise(prediction=prediction)
    x0 = _x0()
    t = torch.full((3,), 0.6, dtype=torch.float64)
    x_t, eps = noise.sample_marginal(x0, t, torch.Generator().manual_seed(1))
    target = noise.target(x0, eps, t)
    x0_hat, eps_hat = noise.denoise(x_t, target, 0.6)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    assert noise.loss(target, x0, eps, t).item() == pytest.approx(0.0, abs=1e-20)
    # DDIM (eta = 0) with the true noise moves along the same noise direction
    x_prev = noise.reverse_step(x_t, target, 0.6, 0.3, eta=0.0)
    ab = noise.alpha_bar(0.3).item()
    torch.testing.assert_close(x_prev, ab**0.5 * x0 + (1 - ab) ** 0.5 * eps)
    torch.testing.assert_close(noise.reverse_step(x_t, target, 0.6, 0.0), x0)


def test_ddpm_step_is_seeded_and_clips():
    noise = VoxelNoise()
    x = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    out = torch.randn_like(x)
    a = noise.reverse_step(x, out, 0.5, 0.4, torch.Generator().manual_seed(3))
    b = noise.reverse_step(x, out, 0.5, 0.4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    final = noise.reverse_step(100 * x, out, 0.5, 0.0)
    assert final.min() >= noise.x_range[0] and final.max() <= noise.x_range[1]


def test_bad_prediction():
    with pytest.raises(InputError, match="prediction"):
        VoxelNoise(prediction="x0")
