"""Composition constraints: parsing, feasibility errors, and sampling that never violates them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.diffusion.constraints import CompositionConstraint, parse_count_ranges, parse_formula
from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.errors import InputError
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.structure import Structure

KNOWN = {1, 6, 7, 8, 16, 22, 29, 30, 50}


def test_parsing():
    assert parse_formula("Cu2ZnSnS4") == {29: 2, 30: 1, 50: 1, 16: 4}
    assert parse_formula("CaTiO3") == {20: 1, 22: 1, 8: 3}
    assert parse_count_ranges("Cu:1-4,S:4") == {29: (1, 4), 16: (4, 4)}
    for bad in ("cu2", "Cu2-", "Xx3", ""):
        with pytest.raises(InputError):
            parse_formula(bad)
    with pytest.raises(InputError):
        parse_count_ranges("Cu:4-1")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"required": {8}, "excluded": {8}}, "both required and excluded"),
        ({"formula": {8: 2, 22: 1}, "excluded": {22}}, "excluded elements"),
        ({"formula": {8: 2}, "required": {22}}, "lacks required"),
        ({"count_ranges": {8: (2, 3)}, "excluded": {8}}, "excluded but needs"),
        ({"atoms": (5, 2)}, "empty"),
    ],
)
def test_contradictions_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        CompositionConstraint(**kwargs)


def test_infeasible_for_the_model():
    with pytest.raises(InputError, match="never seen"):
        CompositionConstraint(formula={92: 1, 8: 2}).atom_count_choices(KNOWN, 20)
    with pytest.raises(InputError, match="never seen"):
        CompositionConstraint(required={92}).atom_count_choices(KNOWN, 20)
    with pytest.raises(InputError, match="need at least 7 atoms"):
        CompositionConstraint(count_ranges={8: (4, 6), 22: (3, 3)}, atoms=(2, 5)).atom_count_choices(KNOWN, 20)
    with pytest.raises(InputError, match="formula units"):
        CompositionConstraint(formula={22: 1, 8: 2}, atoms=(4, 5)).atom_count_choices(KNOWN, 20)
    assert CompositionConstraint(formula={22: 1, 8: 2}, atoms=(3, 10)).atom_count_choices(KNOWN, 20) == [3, 6, 9]


def _tiny_model() -> CrystalDiffusion:
    torch.manual_seed(0)
    structures = [Structure([z, 8, 8, 22], np.random.default_rng(z).random((4, 3)), np.eye(3) * 4) for z in KNOWN]
    structures += [Structure([6] * 8, np.random.default_rng(1).random((8, 3)), np.eye(3) * 5)]
    return CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), DataStatistics.from_structures(structures)).eval()


@pytest.mark.parametrize(
    "constraint",
    [
        CompositionConstraint(formula={30: 1, 16: 1}, atoms=(2, 8)),
        CompositionConstraint(required={29, 50}, excluded={8, 1}),
        CompositionConstraint(required={16}, count_ranges={8: (2, 3), 6: (0, 0)}, atoms=(4, 6)),
        CompositionConstraint(excluded=KNOWN - {6, 7}, count_ranges={7: (1, 1)}),
    ],
)
def test_samples_always_satisfy_the_constraint(constraint):
    model = _tiny_model()
    for seed in range(3):
        for s in model.sample(6, constraint, steps=4, seed=seed):
            assert constraint.check(s.numbers) == [], (s.formula, constraint)
            assert set(s.numbers.tolist()) <= KNOWN


def test_same_seed_same_structures():
    model = _tiny_model()
    a, b = model.sample(3, steps=3, seed=7), model.sample(3, steps=3, seed=7)
    c = model.sample(3, steps=3, seed=8)
    assert all(np.array_equal(x.frac, y.frac) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.frac, y.frac) for x, y in zip(a, c, strict=False) if len(x) == len(y))


def test_only_required_excludes_every_other_known_element():
    closed = CompositionConstraint(required={20, 22}, excluded={11}).only_required({20, 22, 8, 38, 11})
    assert closed.required == {20, 22} and closed.excluded == {8, 38, 11}
    assert closed.allowed_elements({20, 22, 8, 38, 11}) == {20, 22}
