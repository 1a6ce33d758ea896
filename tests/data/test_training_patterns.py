"""Simulated training patterns with randomised instruments (atomdiff.data.generate.patterns)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from atomdiff.data.generate.patterns import draw_chunk_conditions, simulate_training_patterns
from atomdiff.models.pattern_encoder import PatternEncoderConfig, to_q
from atomdiff.physics.radiation import parse_wavelength
from atomdiff.structure import Structure

CONFIG = PatternEncoderConfig(n_q=512, channels=(8, 8), cond_dim=16)


def _rock_salt(a: float) -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([11] * 4 + [17] * 4, np.vstack([fcc, (fcc + 0.5) % 1]), np.eye(3) * a)


def test_conditions_stay_inside_the_encoder_grid():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        c = draw_chunk_conditions(rng, CONFIG.q_max, neutron_fraction=0.3)
        kinds.add(c.radiation)
        q = to_q(c.two_theta, "two_theta", parse_wavelength(c.wavelength).primary)
        assert q[0] > 0 and q[-1] <= CONFIG.q_max and q[0] <= 1.5 + 1e-9 and len(q) > 100
    assert kinds == {"xray", "neutron"}


def test_patterns_are_seeded_and_peaks_sit_at_the_reflections():
    torch.set_num_threads(1)
    structures = [_rock_salt(a) for a in (5.0, 5.64, 6.0)]
    feats, rads = simulate_training_patterns(structures, 3, CONFIG, seed=1, chunk=2)
    again, rads_again = simulate_training_patterns(structures, 3, CONFIG, seed=1, chunk=2)
    other, _ = simulate_training_patterns(structures, 3, CONFIG, seed=2, chunk=2)
    assert feats.shape == (3, 3, 2, CONFIG.n_q) and rads.shape == (3, 3)
    np.testing.assert_array_equal(feats, again)
    np.testing.assert_array_equal(rads, rads_again)
    assert not np.array_equal(feats, other)
    grid = CONFIG.grid()
    for i, s in enumerate(structures):
        a = s.cell[0, 0]
        # fcc reflections: h, k, l all even or all odd
        allowed = sorted(
            {
                2 * math.pi * math.sqrt(h * h + k * k + l * l) / a
                for h, k, l in itertools.product(range(7), repeat=3)
                if (h + k + l) and len({h % 2, k % 2, l % 2}) == 1
            }
        )
        for k in range(3):
            intensity, mask = feats[i, k]
            assert mask.sum() > 50 and intensity.max() <= 1.0 + 1e-6
            q_peak = grid[np.argmax(np.where(mask > 0, intensity, -1))]
            assert min(abs(q_peak - q) for q in allowed) < 0.05, (a, k, q_peak)
