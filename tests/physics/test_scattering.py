"""Scattering powers of the elements and which of them the radiation hardly tells apart."""

from __future__ import annotations

import numpy as np
import periodictable
import pytest

from atomdiff.errors import InputError
from atomdiff.physics.scattering import scattering_power, similar_scatterers


def test_scattering_power_is_the_electron_count_for_xrays_and_b_for_neutrons():
    z = [16, 29, 30, 50]
    assert np.allclose(scattering_power(z, "xray"), z, atol=0.05)  # f(0) of a neutral atom is Z
    expected = [periodictable.elements[k].neutron.b_c for k in z]
    assert np.allclose(scattering_power(z, "neutron"), expected)
    assert scattering_power([29], "neutron", {"Cu": 6.5})[0] == 6.5  # an enriched sample's override
    with pytest.raises(InputError, match="radiation"):
        scattering_power(z, "electron")


def test_cu_and_zn_are_alike_for_xrays_but_not_for_neutrons():
    assert similar_scatterers([16, 29, 30, 50], "xray") == [(29, 30)]
    assert similar_scatterers([16, 29, 30, 50], "neutron") == []  # 7.7 against 5.7 fm
    assert similar_scatterers([29, 30], "xray", tolerance=0.02) == []  # 1 electron in 30 is 3.3 %
    assert similar_scatterers([29, 30, 50], "xray", tolerance=0) == []
    assert similar_scatterers([29], "xray") == []


def test_similar_scatterers_are_chained():
    # Ni 28, Cu 29, Zn 30: 3.4 % steps, Ni and Zn 6.7 % apart, one group through Cu
    assert similar_scatterers([28, 29, 30, 8], "xray", tolerance=0.04) == [(28, 29, 30)]
    assert similar_scatterers([28, 30, 8], "xray", tolerance=0.04) == []


def test_neutron_lengths_of_opposite_sign_are_never_alike():
    # Mn −3.75, H −3.74, Ti −3.37 fm chain within 10 %; Cr +3.64 fm is as large but scatters in opposite phase
    groups = similar_scatterers([1, 25, 22, 24], "neutron", tolerance=0.1)
    assert groups == [(1, 22, 25)]


def test_bad_tolerance_is_refused():
    with pytest.raises(InputError, match="tolerance"):
        similar_scatterers([29, 30], "xray", tolerance=-0.1)
