"""Other orderings of species over the same sites: kesterite ↔ stannite, symmetry-distinct, fewest changes first."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice
from pymatgen.core import Structure as PmgStructure

from atomdiff.errors import InputError
from atomdiff.structure import Structure, orderings
from atomdiff.structure.orderings import site_permutations, species_orderings

CU, ZN, SN, S = 29, 30, 50, 16


def space_group(structure: Structure) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure.to_pymatgen(), symprec=0.05).get_space_group_number()


def test_the_one_other_ordering_of_primitive_kesterite_is_stannite(czts):
    (other,) = species_orderings(czts("kesterite", primitive=True), [(CU, ZN)])
    assert space_group(other) == 121
    assert StructureMatcher().fit(other.to_pymatgen(), czts("stannite", primitive=True).to_pymatgen())
    # and back: stannite's one other ordering is kesterite
    (back,) = species_orderings(czts("stannite", primitive=True), [(CU, ZN)])
    assert space_group(back) == 82


def test_orderings_are_distinct_keep_the_sites_and_come_fewest_changes_first(czts):
    k = czts("kesterite")
    found = species_orderings(k, [(CU, ZN)], limit=20)
    matcher = StructureMatcher()
    everything = [k, *found]
    for i, a in enumerate(everything):  # none is another's symmetry image, none is kesterite itself
        for b in everything[i + 1 :]:
            assert not matcher.fit(a.to_pymatgen(), b.to_pymatgen())
    changed = [int((o.numbers != k.numbers).sum()) for o in found]
    assert changed == sorted(changed) and changed[0] == 2
    for o in found:
        assert np.array_equal(o.frac, k.frac) and np.array_equal(o.cell, k.cell)
        assert np.array_equal(np.sort(o.numbers), np.sort(k.numbers))
        moved = o.numbers != k.numbers
        assert set(k.numbers[moved].tolist()) <= {CU, ZN}  # Sn and S stay where they were
    assert 121 in [space_group(o) for o in found]  # stannite is among them (two Cu/Zn exchanges away here)
    assert len(species_orderings(k, [(CU, ZN)], limit=2)) == 2


def test_no_ordering_without_two_species_of_a_group(czts):
    k = czts("kesterite", primitive=True)
    assert species_orderings(k, [(SN, 51)]) == []  # Sb absent: Sn alone on its sites
    assert species_orderings(k, []) == []


def test_many_arrangements_fall_back_to_single_exchanges(monkeypatch, czts):
    monkeypatch.setattr(orderings, "MAX_ENUMERATED", 2)
    k = czts("kesterite")
    found = species_orderings(k, [(CU, ZN)], limit=50)
    assert found and all(int((o.numbers != k.numbers).sum()) == 2 for o in found)


def test_bad_groups_and_limits_are_refused(czts):
    k = czts("kesterite", primitive=True)
    with pytest.raises(InputError, match="must not repeat"):
        species_orderings(k, [(CU, ZN), (ZN, SN)])
    with pytest.raises(InputError, match="limit"):
        species_orderings(k, [(CU, ZN)], limit=0)


def test_site_permutations_of_rock_salt_form_the_group_its_operations_induce():
    pm = PmgStructure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rs = Structure.from_pymatgen(pm)
    perms = site_permutations(rs)
    # the 192 operations of the conventional cell permute its four Na sites in all 4! ways (Cl follows)
    assert perms.shape == (24, 8)
    for p in perms:
        assert sorted(p.tolist()) == list(range(8))
        assert np.array_equal(rs.numbers[p], rs.numbers)
    as_set = {p.tobytes() for p in perms}
    assert all(p[q].tobytes() in as_set for p in perms for q in perms)  # closed: a group
