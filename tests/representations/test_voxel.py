"""Voxel fields: encode → decode recovers every atom (count and positions) of ordered crystals, amorphous
carbon and triclinic cells; the count is found by the decoder; errors name the parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, make_supercell
from ase.geometry import get_distances
from scipy.optimize import linear_sum_assignment

from atomdiff.errors import InputError
from atomdiff.representations import VoxelGrid, decode, encode
from atomdiff.structure.structure import Structure

TOLERANCE = 0.05  # Å


def _max_error(reference: Structure, decoded: Structure) -> float:
    """Largest distance between matched atoms of the same element (minimum image, optimal matching)."""
    assert len(decoded) == len(reference)
    cost = np.full((len(reference), len(decoded)), 1e9)
    for z in set(reference.numbers.tolist()):
        ia = np.flatnonzero(reference.numbers == z)
        ib = np.flatnonzero(decoded.numbers == z)
        _, d = get_distances(reference.cart[ia], decoded.cart[ib], cell=reference.cell, pbc=True)
        cost[np.ix_(ia, ib)] = d
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def _amorphous_carbon(n: int = 64, density: float = 2.0, d_min: float = 1.3, seed: int = 0) -> Structure:
    """Random carbon positions at ``density`` g/cm³ with no two atoms closer than ``d_min`` Å."""
    rng = np.random.default_rng(seed)
    length = (n * 12.011 / 0.602214076 / density) ** (1 / 3)
    cell = np.eye(3) * length
    frac: list[np.ndarray] = []
    while len(frac) < n:
        p = rng.random(3)
        if frac:
            _, d = get_distances(p @ cell, np.array(frac) @ cell, cell=cell, pbc=True)
            if d.min() < d_min:
                continue
        frac.append(p)
    return Structure(np.full(n, 6), np.array(frac), cell)


def _crystal(name: str) -> Structure:
    if name == "a-C":
        return _amorphous_carbon()
    atoms = {
        "fcc": lambda: bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2),
        "bcc": lambda: bulk("W", "bcc", a=3.16, cubic=True).repeat(2),
        "hcp": lambda: bulk("Mg", "hcp", a=3.21, c=5.21).repeat((2, 2, 2)),
        "diamond": lambda: bulk("C", "diamond", a=3.567, cubic=True).repeat(2),
        "rock-salt": lambda: bulk("NaCl", "rocksalt", a=5.64, cubic=True),
        "fcc-primitive": lambda: make_supercell(bulk("Cu", "fcc", a=3.61), 2 * np.eye(3)),
    }[name]()
    # off-lattice: a rigid shift so that no atom sits on a grid point
    atoms.positions += np.array([0.137, 0.061, 0.093])
    return Structure.from_ase(atoms)


def _grid(s: Structure, spacing: float = 0.25) -> VoxelGrid:
    return VoxelGrid.for_cell(s.cell, sorted(set(s.numbers.tolist())), spacing, sigma=0.3)


@pytest.mark.parametrize("name", ["fcc", "bcc", "hcp", "diamond", "rock-salt", "a-C", "fcc-primitive"])
def test_round_trip(name):
    s = _crystal(name)
    grid = _grid(s)
    decoded = grid.decode(grid.encode(s), s.cell)
    assert len(decoded) == len(s)
    assert sorted(decoded.numbers.tolist()) == sorted(s.numbers.tolist())
    assert _max_error(s, decoded) < TOLERANCE
    np.testing.assert_allclose(decoded.cell, s.cell)


def test_round_trip_skewed_triclinic_cell():
    rng = np.random.default_rng(3)
    cell = np.array([[6.0, 0.0, 0.0], [2.5, 5.5, 0.0], [-1.5, 2.0, 6.5]])
    base = _amorphous_carbon(24, d_min=1.6, seed=4)
    s = Structure(rng.choice([8, 14], len(base)), base.frac, cell)
    grid = _grid(s, spacing=0.22)
    assert grid.plane_spacing(cell).min() < grid.plane_spacing(cell).max()
    decoded = grid.decode(grid.encode(s), cell)
    assert _max_error(s, decoded) < TOLERANCE


def test_field_integrates_to_atom_count():
    s = _crystal("rock-salt")
    grid = _grid(s)
    counts = grid.atom_counts(grid.encode(s), s.cell)
    np.testing.assert_allclose(counts.numpy(), [4.0, 4.0], atol=1e-3)
    assert grid.encode(s).amax().item() == pytest.approx(1.0, abs=0.3)


def test_translation_by_voxels_rolls_the_field():
    s = _crystal("hcp")
    grid = _grid(s)
    steps = np.array([3, -2, 5])
    moved = s.replace(frac=s.frac + steps / np.array(grid.shape))
    expected = torch.roll(grid.encode(s, torch.float64), tuple(steps.tolist()), dims=(1, 2, 3))
    torch.testing.assert_close(grid.encode(moved, torch.float64), expected, atol=1e-12, rtol=0)


def test_decoder_counts_atoms_itself():
    """A vacancy is one atom fewer; a faint blob (mass 0.3) is no atom; a weakened atom (mass 0.8) is one."""
    s = _crystal("fcc")
    grid = _grid(s)
    vacancy = s.replace(numbers=s.numbers[1:], frac=s.frac[1:])
    assert len(grid.decode(grid.encode(vacancy), s.cell)) == len(s) - 1
    masses = torch.ones(len(s), dtype=torch.float64)
    masses[0], masses[1] = 0.3, 0.8
    channels = torch.zeros(len(s), dtype=torch.long)
    field = grid.render(torch.tensor(s.frac), channels, torch.tensor(s.cell), masses)
    found = grid.detect(field, s.cell)
    assert len(found.numbers) == len(s) - 1
    assert found.masses.min() == pytest.approx(0.8, abs=1e-3)


def test_noisy_field_decodes():
    s = _crystal("diamond")
    grid = _grid(s)
    field = grid.encode(s) + 0.03 * torch.randn((grid.n_channels, *grid.shape))
    decoded = grid.decode(field, s.cell)
    assert _max_error(s, decoded) < TOLERANCE


def test_empty_field_gives_empty_structure():
    cell = np.eye(3) * 4.0
    grid = VoxelGrid((6,), (16, 16, 16))
    empty = grid.decode(torch.zeros(1, 16, 16, 16), cell)
    assert isinstance(empty, Structure) and len(empty) == 0
    assert grid.decode(0.1 * torch.ones(1, 16, 16, 16), cell).n_atoms == 0
    nothing = Structure(np.zeros(0, dtype=int), np.zeros((0, 3)), cell)
    assert grid.encode(nothing).abs().sum() == 0


def test_module_functions():
    s = _crystal("rock-salt")
    field = encode(s, spacing=0.25)
    assert field.shape == (2, 23, 23, 23) and field.dtype == torch.float32
    decoded = decode(field, s.cell, ["Na", "Cl"])
    assert _max_error(s, decoded) < TOLERANCE
    assert encode(s, ["Cl", "Na"], (16, 16, 16)).shape == (2, 16, 16, 16)
    grid = VoxelGrid.for_cell(s.cell, "Na", 0.3, multiple_of=8)
    assert grid.species == (11,) and grid.shape == (24, 24, 24)
    batch = _grid(s).encode_batch([s, s])
    assert batch.shape == (2, 2, 23, 23, 23)
    assert len(_grid(s).decode_batch(batch, s.cell)) == 2


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda s: VoxelGrid((29,), (16, 16, 16)).encode(s), "species"),
        (lambda s: VoxelGrid((11, 17), (4, 4, 4)).encode(s), "sigma"),
        (lambda s: VoxelGrid((11, 17), (16, 16, 16)).decode(torch.zeros(1, 16, 16, 16), s.cell), "field"),
        (lambda s: VoxelGrid((11, 11), (16, 16, 16)), "species"),
        (lambda s: VoxelGrid((11,), (16, 0, 16)), "shape"),
        (lambda s: VoxelGrid((11,), (16, 16, 16), sigma=-1.0), "sigma"),
        (lambda s: VoxelGrid((11, 17), (16, 16, 16)).encode(s.replace(pbc=(True, True, False))), "pbc"),
        (lambda s: encode(s), "shape"),
        (lambda s: VoxelGrid.for_cell(s.cell, [11], spacing=0.0), "spacing"),
    ],
)
def test_errors_name_the_parameter(call, word):
    with pytest.raises(InputError, match=word):
        call(_crystal("rock-salt"))
