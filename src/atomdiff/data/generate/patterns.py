"""Simulated powder patterns with randomised instruments: the training input of the pattern encoder.

Each structure gets ``per_structure`` patterns, each from its own draw of the conditions a user's measurement may
come with: radiation (X-ray, or neutron with probability ``neutron_fraction``), wavelength (laboratory tubes Cu,
Co, Mo, Ag, the Cu Kα doublet, or a synchrotron/neutron value), 2θ range and step, Caglioti widths, Lorentzian
fraction, zero shift, displacement parameter, March–Dollase preferred orientation, Chebyshev background and Poisson
counting noise. Structures are simulated in chunks that share a radiation, wavelength and grid (the forward model
takes one of each); profile, zero shift and texture differ per structure within a chunk. The output is already on
the encoder's Q grid (:func:`~atomdiff.models.pattern_encoder.pattern_features`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from atomdiff.models.pattern_encoder import RADIATIONS, PatternEncoderConfig, pattern_features
from atomdiff.physics.diffraction import PowderDiffractionModel
from atomdiff.physics.profile import Instrument, Profile
from atomdiff.physics.radiation import parse_wavelength
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure

LAB_WAVELENGTHS = ("CuKa1", "CuKa", "CoKa1", "MoKa1", "AgKa1")
TEXTURE_DIRECTIONS = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1), (0, 1, 1))


@dataclasses.dataclass
class ChunkConditions:
    """What the structures of one simulated chunk share."""

    radiation: str
    wavelength: str | float
    two_theta: np.ndarray


def draw_chunk_conditions(rng: np.random.Generator, q_max: float, neutron_fraction: float = 0.2) -> ChunkConditions:
    """A radiation, wavelength and 2θ grid whose Q range lies inside ``(0, q_max]``."""
    if rng.random() < neutron_fraction:
        radiation, wavelength = "neutron", float(rng.uniform(1.1, 2.5))
    else:
        radiation = "xray"
        wavelength = str(rng.choice(LAB_WAVELENGTHS)) if rng.random() < 0.8 else float(rng.uniform(0.4, 1.0))
    lam = parse_wavelength(wavelength).primary
    # the highest 2θ the encoder's grid can hold at this wavelength (Q = 4π sinθ / λ ≤ q_max)
    limit = 2 * math.degrees(math.asin(min(1.0, q_max * lam / (4 * math.pi)))) - 1.0
    stop = float(min(rng.uniform(60.0, 150.0), limit))
    # laboratory-like first angles, but never beyond a low Q (short wavelengths would otherwise lose every
    # low-angle reflection)
    low_q = 2 * math.degrees(math.asin(min(1.0, rng.uniform(0.6, 1.5) * lam / (4 * math.pi))))
    start = float(min(rng.uniform(3.0, 20.0), low_q, stop / 3))
    step = float(rng.uniform(0.01, 0.03))
    return ChunkConditions(radiation, wavelength, np.arange(start, stop, step))


def simulate_chunk(
    structures: Sequence[Structure], conditions: ChunkConditions, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(two_theta, counts)`` for each structure under ``conditions`` with per-structure instrument draws."""
    n = len(structures)
    x = torch.as_tensor(conditions.two_theta)
    model = PowderDiffractionModel(conditions.radiation, conditions.wavelength, x, profile=Profile(cutoff=20.0))

    def draw(lo: float, hi: float) -> torch.Tensor:
        return torch.as_tensor(rng.uniform(lo, hi, n))

    inst = Instrument(
        zero_shift=draw(-0.1, 0.1), u=draw(0.0, 0.05), v=draw(-0.02, 0.0), w=draw(0.002, 0.05), eta=draw(0.0, 1.0)
    )
    textured = rng.random(n) < 0.3
    inst.po_ratio = torch.as_tensor(np.where(textured, rng.uniform(0.7, 1.3, n), 1.0))
    inst.po_direction = torch.as_tensor(
        np.array([TEXTURE_DIRECTIONS[k] for k in rng.integers(len(TEXTURE_DIRECTIONS), size=n)], dtype=float)
    )
    batch = StructureBatch.from_structures(list(structures))
    b_iso = torch.as_tensor(rng.uniform(0.2, 1.5, n))[batch.batch_idx]
    with torch.no_grad():
        y = model(batch, b_iso=b_iso, instrument=inst).y.numpy()
    out = []
    t = np.linspace(-1.0, 1.0, x.numel())
    for k in range(n):
        peak = y[k].max()
        clean = y[k] / peak if peak > 0 else y[k]
        level = rng.uniform(0.0, 0.3)
        background = level * (1 + rng.uniform(-0.5, 0.5) * t + rng.uniform(-0.3, 0.3) * (2 * t * t - 1))
        counts = 10 ** rng.uniform(2.5, 5.0)
        noisy = rng.poisson(np.clip(clean + background, 0, None) * counts).astype(float)
        out.append((conditions.two_theta, noisy))
    return out


def simulate_training_patterns(
    structures: Sequence[Structure],
    per_structure: int,
    config: PatternEncoderConfig,
    seed: int = 0,
    chunk: int = 64,
    neutron_fraction: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder inputs ``(N, per_structure, 2, n_q)`` float32 and radiation indices ``(N, per_structure)`` int8.

    The same ``seed`` gives the same patterns. ``progress`` is called with (chunks done, chunks in all).
    """
    n = len(structures)
    feats = np.zeros((n, per_structure, 2, config.n_q), dtype=np.float32)
    rads = np.zeros((n, per_structure), dtype=np.int8)
    rng = np.random.default_rng(seed)
    total = per_structure * math.ceil(n / chunk)
    done = 0
    for k in range(per_structure):
        order = rng.permutation(n)  # new chunk companions for every variant
        for start in range(0, n, chunk):
            idx = order[start : start + chunk]
            cond = draw_chunk_conditions(rng, config.q_max, neutron_fraction)
            lam = parse_wavelength(cond.wavelength).primary
            for i, (x, y) in zip(idx, simulate_chunk([structures[i] for i in idx], cond, rng), strict=True):
                feats[i, k] = pattern_features(x, y, "two_theta", lam, config)
                rads[i, k] = RADIATIONS.index(cond.radiation)
            done += 1
            if progress is not None:
                progress(done, total)
    return feats, rads
