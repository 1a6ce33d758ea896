"""Pattern encoder: a powder pattern (any wavelength, 2θ or Q axis, X-ray or neutron) → a conditioning vector.

Every pattern is first put on one fixed Q grid (:func:`pattern_features`), so one encoder serves every
wavelength and instrument: two channels, the normalised intensity (background-subtracted by the pattern's minimum,
scaled to a maximum of 1) and a mask that says which part of the grid the measurement covers. A 1D convolutional
stack then reads it; its last feature map is flattened rather than pooled, because peak *positions* (the lattice)
matter as much as their shapes. The radiation (X-ray or neutron) enters as a learned embedding.

The conditioned crystal model (:class:`~atomdiff.diffusion.crystal.CrystalDiffusion` with an encoder) is trained
on simulated patterns with randomised instruments (:mod:`atomdiff.data.generate.patterns`) and sampled with
classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from atomdiff.errors import InputError

RADIATIONS = ("xray", "neutron")


@dataclasses.dataclass
class PatternEncoderConfig:
    """Hyper-parameters of :class:`PatternEncoder` (stored in the model's ``config.json``).

    q_min, q_max, n_q: the fixed Q grid (Å⁻¹) every pattern is resampled onto.
    channels: output channels of the convolution blocks (each halves the length).
    cond_dim: size of the conditioning vector.
    """

    q_min: float = 0.5
    q_max: float = 8.0
    n_q: int = 1024
    channels: tuple[int, ...] = (16, 32, 64, 64, 96, 96)
    cond_dim: int = 128

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.n_q % (2 ** len(self.channels)):
            raise InputError(f"n_q ({self.n_q}) must be divisible by 2^{len(self.channels)}")

    def grid(self) -> np.ndarray:
        return np.linspace(self.q_min, self.q_max, self.n_q)


def to_q(x: np.ndarray, axis: str, wavelength: float | None) -> np.ndarray:
    """The grid ``x`` (2θ in degrees or Q in Å⁻¹) as Q in Å⁻¹."""
    x = np.asarray(x, dtype=float)
    if axis == "q":
        return x
    if axis != "two_theta":
        raise InputError(f"a diffraction pattern needs a 2θ or Q axis, got {axis!r}")
    if wavelength is None or not wavelength > 0:
        raise InputError("a 2θ pattern needs the wavelength to be put on the encoder's Q grid")
    return 4 * math.pi * np.sin(np.radians(x) / 2) / float(wavelength)


def pattern_features(
    x: np.ndarray, y: np.ndarray, axis: str, wavelength: float | None, config: PatternEncoderConfig
) -> np.ndarray:
    """``(2, n_q)`` float32 encoder input: normalised intensity and coverage mask on the config's Q grid.

    The intensity is averaged over each grid bin (measured points finer than the grid) or interpolated (coarser),
    after subtracting its minimum and scaling its maximum to 1. Outside the measured range both channels are 0.
    """
    q = to_q(x, axis, wavelength)
    y = np.asarray(y, dtype=float)
    if q.shape != y.shape or q.size < 2:
        raise InputError(f"pattern needs matching x and y of at least 2 points, got {q.shape} and {y.shape}")
    y = y - y.min()
    peak = y.max()
    y = y / peak if peak > 0 else y
    grid = config.grid()
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, [grid[-1] + step / 2]])
    covered = (grid >= q[0] - step / 2) & (grid <= q[-1] + step / 2)
    bins = np.digitize(q, edges) - 1
    inside = (bins >= 0) & (bins < grid.size)
    sums = np.bincount(bins[inside], y[inside], minlength=grid.size)
    counts = np.bincount(bins[inside], minlength=grid.size)
    out = np.interp(grid, q, y)  # where a bin holds no measured point (a grid finer than the data)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    out[~covered] = 0.0
    return np.stack([out, covered.astype(float)]).astype(np.float32)


class PatternEncoder(nn.Module):
    """``forward(features (B, 2, n_q), radiation (B,) index into RADIATIONS)`` → ``(B, cond_dim)``."""

    def __init__(self, config: PatternEncoderConfig | None = None):
        super().__init__()
        self.config = c = config or PatternEncoderConfig()
        blocks: list[nn.Module] = []
        cin = 2
        for cout in c.channels:
            blocks += [nn.Conv1d(cin, cout, 5, padding=2), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]
            blocks += [nn.Conv1d(cout, cout, 3, padding=1), nn.SiLU(), nn.AvgPool1d(2)]
            cin = cout
        self.conv = nn.Sequential(*blocks)
        flat = cin * (c.n_q // 2 ** len(c.channels))
        self.radiation = nn.Embedding(len(RADIATIONS), c.cond_dim)
        self.head = nn.Sequential(nn.Linear(flat, 2 * c.cond_dim), nn.SiLU(), nn.Linear(2 * c.cond_dim, c.cond_dim))

    def forward(self, features: torch.Tensor, radiation: torch.Tensor) -> torch.Tensor:
        h = self.conv(features.float()).flatten(1)
        return self.head(h) + self.radiation(radiation.long())
