"""Physics guidance: its direction lowers the misfit, and guided sampling is seeded and steered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.diffusion.constraints import CompositionConstraint
from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.diffusion.guidance import PhysicsGuidance
from atomdiff.errors import InputError
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, two_theta_grid
from atomdiff.physics.target import PatternTarget
from atomdiff.structure import Structure
from atomdiff.structure.batch import StructureBatch


def _perovskite(a: float = 3.9) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure([20, 22, 8, 8, 8], frac, np.eye(3) * a)


def _target(structure: Structure) -> PatternTarget:
    model = PowderDiffractionModel("xray", "CuKa1", two_theta_grid(15, 80, 0.04), profile=Profile(0, 0, 0.02, 0.5))
    y = model(StructureBatch.from_structures([structure])).y[0]
    return PatternTarget(model, y / y.max() * 1e4 + 50)


def test_guidance_direction_lowers_the_misfit():
    truth = _perovskite()
    guide = PhysicsGuidance(_target(truth))
    rng = np.random.default_rng(0)
    start = truth.replace(frac=truth.frac + rng.normal(0, 0.03, truth.frac.shape))
    batch = StructureBatch.from_structures([start])
    frac = batch.frac.clone().requires_grad_()
    x0 = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    cell = batch.cell * (1 + x0[:, :1].unsqueeze(-1))  # any differentiable dependence of the cell on x0
    moved = StructureBatch(batch.numbers, frac, cell, batch.batch_idx, batch.pbc)
    d_frac, d_x = guide.gradients(moved, x0, t=0.1)
    assert d_frac.shape == frac.shape and d_x.shape == (1, 6)
    assert torch.allclose(d_frac.pow(2).mean().sqrt(), torch.tensor(1.0, dtype=torch.float64))
    with torch.no_grad():
        before = guide.misfit(batch, 0.1)
        after = guide.misfit(batch.replace(frac=batch.frac - 0.003 * d_frac), 0.1)
    assert float(after) < float(before)


def _guided_setup() -> tuple[CrystalDiffusion, CompositionConstraint, PhysicsGuidance]:
    """A tiny untrained model of three cubic perovskites, the CaTiO3 formula, and guidance by the 3.9 Å pattern."""
    torch.manual_seed(0)
    truth = _perovskite()
    stats = DataStatistics.from_structures([truth, _perovskite(4.0), _perovskite(3.8)])
    model = CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), stats).eval()
    guide = PhysicsGuidance(_target(truth), strength=1.0, t_start=1.0)
    return model, CompositionConstraint(formula={20: 1, 22: 1, 8: 3}), guide


def test_guided_sampling_is_reproducible_and_steered():
    model, constraint, guide = _guided_setup()
    a = model.sample(2, constraint, steps=6, seed=3, guidance=guide)
    b = model.sample(2, constraint, steps=6, seed=3, guidance=guide)
    plain = model.sample(2, constraint, steps=6, seed=3)
    for s, t in zip(a, b, strict=True):
        assert np.array_equal(s.frac, t.frac) and np.array_equal(s.cell, t.cell)
    assert not np.allclose(a[0].frac, plain[0].frac)


def test_held_cells_are_kept_exactly_and_guided_positions_still_move():
    model, constraint, guide = _guided_setup()
    skew = torch.tensor([[3.9, 0.0, 0.0], [0.4, 4.1, 0.0], [0.2, -0.3, 7.5]], dtype=torch.float64)
    cells = torch.stack([torch.eye(3, dtype=torch.float64) * 3.9, skew])
    a = model.sample(2, constraint, steps=6, seed=3, guidance=guide, cells=cells)
    b = model.sample(2, constraint, steps=6, seed=3, guidance=guide, cells=cells)
    free = model.sample(2, constraint, steps=6, seed=3, guidance=guide)
    for s, t, cell in zip(a, b, cells, strict=True):
        assert np.array_equal(s.cell, cell.numpy()) and np.array_equal(s.frac, t.frac)
    assert not np.allclose(a[1].frac, free[1].frac)
    with pytest.raises(InputError, match="shape"):
        model.sample(3, constraint, steps=2, cells=cells)
    with pytest.raises(InputError, match="degenerate"):
        model.sample(2, constraint, steps=2, cells=torch.zeros(2, 3, 3, dtype=torch.float64))


def test_a_restart_starts_near_the_given_positions_and_is_reproducible():
    """Restarted at a low noise level the sample stays near its start (a tiny untrained model cannot carry it
    far in few steps); from the prior it lands anywhere; the same seed gives the same restart; a restart needs the
    species and the cells."""
    model, constraint, guide = _guided_setup()
    start = _perovskite()
    cells = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone() * 3.9
    numbers = [start.numbers] * 2
    near = model.sample(2, steps=4, seed=5, numbers=numbers, cells=cells, start=([start.frac] * 2, 0.05))
    again = model.sample(2, steps=4, seed=5, numbers=numbers, cells=cells, start=([start.frac] * 2, 0.05))
    fresh = model.sample(2, steps=4, seed=5, numbers=numbers, cells=cells)

    def offset(s: Structure) -> float:
        d = s.frac - start.frac
        return float(np.abs(d - np.round(d)).max())

    assert all(offset(s) < 0.1 for s in near) and max(offset(s) for s in fresh) > 0.2
    assert all(np.array_equal(a.frac, b.frac) for a, b in zip(near, again, strict=True))
    with pytest.raises(InputError, match="restart needs"):
        model.sample(2, constraint, steps=2, start=([start.frac] * 2, 0.3))
    with pytest.raises(InputError, match="noise level"):
        model.sample(2, steps=2, numbers=numbers, cells=cells, start=([start.frac] * 2, 1.5))
    with pytest.raises(InputError, match="one row per atom"):
        model.sample(2, steps=2, numbers=numbers, cells=cells, start=([start.frac[:3]] * 2, 0.3))


def test_repulsion_parts_overlapping_atoms_and_leaves_others_alone():
    from atomdiff.diffusion.guidance import RepulsionGuidance

    guide = RepulsionGuidance(strength=2.0, r0=1.0)
    clean = _perovskite()
    # two atoms 0.2 Å apart across the periodic boundary (frac 0.98 and 0.02 of a 5 Å axis)
    overlap = Structure([6, 6, 8], [[0.98, 0.5, 0.5], [0.02, 0.5, 0.5], [0.5, 0.0, 0.0]], np.eye(3) * 5.0)
    batch = StructureBatch.from_structures([clean, overlap])
    frac = batch.frac.clone().requires_grad_()
    x0 = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)
    moved = StructureBatch(batch.numbers, frac, batch.cell, batch.batch_idx, batch.pbc)
    penalty = guide.penalty(moved).detach()
    assert float(penalty[0]) == 0.0 and float(penalty[1]) == pytest.approx(0.8**2)  # each pair once
    d_frac, d_x = guide.gradients(moved, x0, t=0.5)
    assert torch.count_nonzero(d_x) == 0 and torch.count_nonzero(d_frac[:5]) == 0  # the clean cell is untouched
    assert torch.count_nonzero(d_frac[7]) == 0  # the third atom is far from both
    stepped = batch.replace(frac=batch.frac - 0.01 * d_frac)  # the sampler moves against the direction
    assert float(guide.penalty(stepped)[1]) < float(penalty[1])
    assert float(d_frac[5, 0]) > 0 > float(d_frac[6, 0])  # atom at 0.98 moves up to 1 (wraps), the other down
    assert guide.active(1.0) and not RepulsionGuidance(0.0).active(0.5)
    with pytest.raises(ValueError):
        RepulsionGuidance(strength=1.0, r0=0.0)


def test_sampling_takes_several_guidance_terms_and_repulsion_keeps_atoms_apart():
    from atomdiff.diffusion.guidance import RepulsionGuidance
    from atomdiff.physics.descriptors import min_distance

    model, constraint, guide = _guided_setup()
    crowded = CompositionConstraint(formula={20: 2, 22: 2, 8: 6})  # ten atoms in cells sized for five
    plain = model.sample(6, crowded, steps=8, seed=1)
    apart = model.sample(6, crowded, steps=8, seed=1, guidance=RepulsionGuidance(strength=3.0, r0=1.5))
    assert np.mean([min_distance(s) for s in apart]) > np.mean([min_distance(s) for s in plain])
    both = model.sample(2, constraint, steps=6, seed=3, guidance=[guide, RepulsionGuidance(2.0)])
    again = model.sample(2, constraint, steps=6, seed=3, guidance=(guide, RepulsionGuidance(2.0)))
    assert all(np.array_equal(s.frac, t.frac) for s, t in zip(both, again, strict=True))
    assert all(len(s) == 5 for s in both)
