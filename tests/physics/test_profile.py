"""Peak shapes and per-structure instrument tensors: merging, texture, agreement with the float profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from atomdiff.physics.diffraction import PowderDiffractionModel, two_theta_grid
from atomdiff.physics.profile import Instrument, Profile
from atomdiff.structure import Structure
from atomdiff.structure.batch import StructureBatch


def _rocksalt(a: float = 5.64) -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([11] * 4 + [17] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * a)


def _tetragonal() -> Structure:
    return Structure([22, 8, 8], [[0, 0, 0], [0.3, 0.3, 0], [0.7, 0.7, 0]], np.diag([4.6, 4.6, 2.95]))


def test_merging_equivalent_reflections_changes_nothing():
    """A uniform grid merges coincident peaks; a (slightly) non-uniform grid evaluates each one: same pattern."""
    s = _rocksalt()
    x = two_theta_grid(20, 80, 0.02)
    x_nonuniform = x.clone()
    x_nonuniform[1:-1] += 1e-9 * torch.sin(torch.arange(x.shape[0] - 2, dtype=torch.float64))
    prof = Profile(0.01, -0.004, 0.01, 0.3, cutoff=None)
    batch = StructureBatch.from_structures([s])
    merged = PowderDiffractionModel("xray", "CuKa1", x, profile=prof)(batch).y
    plain = PowderDiffractionModel("xray", "CuKa1", x_nonuniform, profile=prof)(batch).y
    assert torch.allclose(merged, plain, rtol=1e-6, atol=1e-9 * float(plain.max()))


def test_instrument_tensors_reproduce_the_profile_and_vary_per_structure():
    s = _tetragonal()
    x = two_theta_grid(20, 80, 0.02)
    prof = Profile(0.02, -0.01, 0.02, 0.6)
    model = PowderDiffractionModel("xray", "CuKa1", x, profile=prof, zero_shift=0.05)
    batch = StructureBatch.from_structures([s, s])
    inst = Instrument.from_profile(prof, 2, zero_shift=0.05)
    assert torch.allclose(model(batch).y, model(batch, instrument=inst).y, rtol=1e-12)
    inst.zero_shift = torch.tensor([0.05, 0.25], dtype=torch.float64)
    y = model(batch, instrument=inst).y
    shifted = PowderDiffractionModel("xray", "CuKa1", x, profile=prof, zero_shift=0.25)(batch).y[1]
    assert torch.allclose(y[1], shifted, rtol=1e-10)
    assert not torch.allclose(y[0], y[1])


def test_march_dollase_texture():
    s = _tetragonal()
    x = two_theta_grid(20, 80, 0.02)
    batch = StructureBatch.from_structures([s])
    plain = PowderDiffractionModel("xray", "CuKa1", x)
    same = PowderDiffractionModel("xray", "CuKa1", x, po_ratio=1.0, po_direction=(0, 0, 1))
    platy = PowderDiffractionModel("xray", "CuKa1", x, po_ratio=0.7, po_direction=(0, 0, 1))
    r0, r1 = plain.reflections(batch), platy.reflections(batch)
    assert torch.allclose(plain(batch).y, same(batch).y)
    ratio = r1.intensity[:, 0] / r0.intensity[:, 0].clamp_min(1e-30)
    along = (r0.hkl[:, 0] == 0) & (r0.hkl[:, 1] == 0) & (r0.intensity[:, 0] > 0)
    perpendicular = (r0.hkl[:, 2] == 0) & (r0.intensity[:, 0] > 0)
    # platelets normal to c: 00l enhanced by r^-3, hk0 reduced by r^(3/2)
    assert torch.allclose(ratio[along], torch.tensor(0.7**-3, dtype=torch.float64))
    assert torch.allclose(ratio[perpendicular], torch.tensor(0.7**1.5, dtype=torch.float64))
    # the March–Dollase function is normalised over orientations: mean over the sphere of P(α) = 1
    cos_a = torch.linspace(0, 1, 200001, dtype=torch.float64)
    r = 0.7
    p = (r * r * cos_a**2 + (1 - cos_a**2) / r) ** -1.5
    assert math.isclose(float(torch.trapezoid(p, cos_a)), 1.0, rel_tol=1e-6)


def test_forward_mode_derivative_of_zero_shift_matches_finite_difference():
    s = _rocksalt()
    x = two_theta_grid(25, 60, 0.01)
    model = PowderDiffractionModel("xray", "CuKa1", x, profile=Profile(0, 0, 0.02, 0.5, cutoff=20))
    batch = StructureBatch.from_structures([s])
    inst = Instrument.from_profile(model.profile, 1)
    with fwAD.dual_level():
        inst.zero_shift = fwAD.make_dual(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
        _, tangent = fwAD.unpack_dual(model(batch, instrument=inst).y)
    h = 1e-6
    y = []
    for z in (-h, h):
        i2 = Instrument.from_profile(model.profile, 1, zero_shift=z)
        y.append(model(batch, instrument=i2).y)
    fd = (y[1] - y[0]) / (2 * h)
    assert torch.allclose(tangent, fd, rtol=1e-4, atol=1e-6 * float(fd.abs().max()))


@pytest.mark.parametrize("step, cutoff", [(0.02, 20.0), (None, None)])
def test_profile_sum_jvp_equals_forward_mode_through_the_plain_sum(step, cutoff):
    """profile_sum_jvp's analytic derivatives along K directions equal K forward-mode passes through
    profile_sum, on a uniform grid with windows and on an arbitrary grid (every point)."""
    from atomdiff.physics.profile import PeakList, profile_sum, profile_sum_jvp

    gen = torch.Generator().manual_seed(0)
    x = torch.arange(10.0, 40.0, 0.02, dtype=torch.float64)
    if step is None:
        x = torch.sort(x + 0.005 * torch.rand(x.shape[0], generator=gen, dtype=torch.float64)).values
    m, k = 30, 5
    values = {
        "centre": 12 + 26 * torch.rand(m, generator=gen, dtype=torch.float64),
        "fwhm": 0.05 + 0.3 * torch.rand(m, generator=gen, dtype=torch.float64),
        "area": torch.rand(m, generator=gen, dtype=torch.float64),
        "eta": torch.rand(m, generator=gen, dtype=torch.float64),
    }
    owner = torch.randint(0, 3, (m,), generator=gen)
    tangents = {name: torch.randn(m, k, generator=gen, dtype=torch.float64) for name in values}
    peaks = PeakList(values["centre"], values["fwhm"], values["area"], owner, values["eta"], 3)
    y, dy = profile_sum_jvp(x, peaks, tangents, cutoff, step)
    np.testing.assert_allclose(y.numpy(), profile_sum(x, peaks, cutoff, step).numpy(), rtol=1e-12, atol=1e-14)
    for j in range(k):
        with fwAD.dual_level():
            dual = PeakList(
                *(fwAD.make_dual(values[n], tangents[n][:, j]) for n in ("centre", "fwhm", "area")),
                owner,
                fwAD.make_dual(values["eta"], tangents["eta"][:, j]),
                3,
            )
            expected = fwAD.unpack_dual(profile_sum(x, dual, cutoff, step)).tangent
        np.testing.assert_allclose(dy[..., j].numpy(), expected.numpy(), rtol=1e-9, atol=1e-9)
