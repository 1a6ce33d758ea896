"""Pattern encoder input: any axis and wavelength onto one Q grid; the encoder's shape and scale invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atomdiff.errors import InputError
from atomdiff.models.pattern_encoder import PatternEncoder, PatternEncoderConfig, pattern_features, to_q

CONFIG = PatternEncoderConfig(n_q=256, channels=(8, 8, 16), cond_dim=16)


def _peak_pattern(q_peak: float, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    two_theta = np.arange(10.0, 90.0, 0.01)
    q = to_q(two_theta, "two_theta", wavelength)
    return two_theta, 50.0 + 1000.0 * np.exp(-0.5 * ((q - q_peak) / 0.01) ** 2)


def test_same_pattern_on_any_axis_and_wavelength_gives_the_same_features():
    grid = CONFIG.grid()
    for lam in (1.5406, 0.7093):
        x, y = _peak_pattern(3.0, lam)
        f = pattern_features(x, y, "two_theta", lam, CONFIG)
        assert f.shape == (2, CONFIG.n_q) and f.dtype == np.float32
        assert abs(grid[f[0].argmax()] - 3.0) <= grid[1] - grid[0]
        assert 0.5 < f[0].max() <= 1.0 and f[0].min() >= 0.0  # bin average of a narrow peak; background off
        covered = grid[f[1] > 0]
        q = to_q(x, "two_theta", lam)
        assert covered[0] >= q[0] - (grid[1] - grid[0]) and covered[-1] <= q[-1] + (grid[1] - grid[0])
        assert np.all(f[0][f[1] == 0] == 0)
    x, y = _peak_pattern(3.0, 1.5406)
    on_q = pattern_features(to_q(x, "two_theta", 1.5406), y, "q", None, CONFIG)
    np.testing.assert_allclose(on_q, pattern_features(x, y, "two_theta", 1.5406, CONFIG), atol=1e-6)
    # a coarse grid (fewer points than bins) is interpolated, not left with holes
    coarse = pattern_features(x[::200], y[::200], "two_theta", 1.5406, CONFIG)
    inside = coarse[1] > 0
    assert np.all(np.isfinite(coarse)) and inside.sum() > 100


def test_bad_pattern_input():
    x, y = _peak_pattern(3.0, 1.5406)
    with pytest.raises(InputError, match="wavelength"):
        pattern_features(x, y, "two_theta", None, CONFIG)
    with pytest.raises(InputError, match="2θ or Q"):
        pattern_features(x, y, "r", None, CONFIG)
    with pytest.raises(InputError, match="matching"):
        pattern_features(x, y[:-1], "q", None, CONFIG)
    with pytest.raises(InputError, match="divisible"):
        PatternEncoderConfig(n_q=100, channels=(8, 8, 8))


def test_encoder_shape_and_intensity_scale():
    torch.manual_seed(0)
    enc = PatternEncoder(CONFIG).eval()
    x, y = _peak_pattern(2.2, 1.5406)
    a = pattern_features(x, y, "two_theta", 1.5406, CONFIG)
    b = pattern_features(x, 7.0 * y, "two_theta", 1.5406, CONFIG)  # counting longer changes nothing
    out = enc(torch.as_tensor(np.stack([a, b])), torch.tensor([0, 0]))
    assert out.shape == (2, CONFIG.cond_dim)
    torch.testing.assert_close(out[0], out[1])
    neutron = enc(torch.as_tensor(a)[None], torch.tensor([1]))
    assert not torch.allclose(neutron[0], out[0])  # the radiation is an input
    assert math.isfinite(float(out.sum()))
