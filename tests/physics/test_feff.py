"""XANES through FEFF10 (feff10-rs): clusters, feff.inp, the environment cache, failures, and the physics.

FEFF runs use tiny settings (cluster, FMS and SCF radius 3 Å, final-state-rule core hole) so that each
distinct site takes a few seconds; everything else runs on a stand-in runner that needs no FEFF.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.lattice.hexagonal import Graphite
from ase.neighborlist import neighbor_list
from scipy.spatial.transform import Rotation

import atomdiff.physics.xanes.feff as feff_module
from atomdiff.errors import AtomdiffError, InputError
from atomdiff.physics.xanes import (
    FeffRunError,
    FeffSettings,
    SiteFailure,
    SpectrumCache,
    cut_clusters,
    environment_key,
    feff_input,
    parse_sites,
    read_xmu,
    select_sites,
    simulate_xanes,
)
from atomdiff.structure.structure import Structure

TINY = {"cluster_radius": 3.0, "fms_radius": 3.0, "scf_radius": 3.0, "corehole": "FSR"}


def diamond() -> Structure:
    return Structure.from_ase(bulk("C", "diamond", a=3.567))


def graphite() -> Structure:
    return Structure.from_ase(Graphite("C", latticeconstant={"a": 2.464, "c": 6.711}))


def moved(structure: Structure, seed: int = 3) -> Structure:
    """The same crystal turned by a random rotation and shifted by a random translation."""
    rotation = Rotation.random(random_state=seed).as_matrix()
    shift = np.random.default_rng(seed).uniform(-0.5, 0.5, 3)
    return structure.replace(cell=structure.cell @ rotation.T, frac=structure.frac + shift)


def random_carbon(n: int = 6, seed: int = 1) -> Structure:
    """A few carbon atoms at random in a 5 Å cube: every site has its own environment."""
    frac = np.random.default_rng(seed).uniform(0, 1, (n, 3))
    return Structure(np.full(n, 6), frac, np.eye(3) * 5.0)


def fake_spectrum(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in for FEFF: an edge whose height depends on the number of atoms; the grid starts per site."""
    lines = text.splitlines()
    n_atoms = len(lines) - lines.index("ATOMS") - 3
    start = 270.0 + 0.01 * n_atoms
    energy = np.linspace(start, start + 60.0, 121)
    return energy, (1.0 + 0.01 * n_atoms) / (1.0 + np.exp(-(energy - 285.0)))


def failing_at_site_3(text: str) -> tuple[np.ndarray, np.ndarray]:
    if " site 3 " in text.splitlines()[0]:
        raise FeffRunError("FEFF failed: stage pot exited with status 1")
    return fake_spectrum(text)


class CountingRunner:
    """Counts the runs it is asked for, so a test sees which sites came from the cache."""

    def __init__(self, runner=fake_spectrum):
        self.runner = runner
        self.calls = 0

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self.runner(text)


# --- clusters and the FEFF input --------------------------------------------------------------------------------


def test_cluster_of_diamond_has_the_shells_of_diamond_and_matches_ase():
    s = diamond()
    (cluster,) = cut_clusters(s, [0], 3.0)
    assert len(cluster) == 1 + 4 + 12 + 12
    assert cluster.numbers[0] == 6 and np.allclose(cluster.positions[0], 0.0)
    d = cluster.distances
    assert np.all(np.diff(d) >= -1e-9)
    assert np.allclose(d[1:5], 3.567 * np.sqrt(3) / 4) and np.allclose(d[5:17], 3.567 / np.sqrt(2))
    i, _ = neighbor_list("ij", s.to_ase(), 3.0)
    assert len(cluster) == 1 + int(np.sum(i == 0))


def test_feff_input_has_absorber_as_potential_0_and_one_potential_per_element():
    s = Structure.from_ase(bulk("SiC", "zincblende", a=4.36))
    carbon = int(np.flatnonzero(s.numbers == 6)[0])
    settings = FeffSettings("C", cluster_radius=3.2, fms_radius=3.2, scf_radius=0)
    (cluster,) = cut_clusters(s, [carbon], 3.2)
    text = feff_input(cluster, settings)
    lines = text.splitlines()
    potentials = lines[lines.index("POTENTIALS") + 2 : lines.index("ATOMS") - 1]
    assert [p.split() for p in potentials] == [["0", "6", "C"], ["1", "6", "C"], ["2", "14", "Si"]]
    atoms = lines[lines.index("ATOMS") + 2 : lines.index("END")]
    assert len(atoms) == len(cluster) and atoms[0].split()[3] == "0"
    assert {a.split()[4] for a in atoms[1:5]} == {"Si"} and {a.split()[3] for a in atoms[1:5]} == {"2"}
    assert "EDGE K" in lines and "XANES 4 0.07 0.0" in lines and not any(ln.startswith("SCF") for ln in lines)
    feff10 = pytest.importorskip("feff10")
    parsed = feff10.FeffInput.parse_strict(text)
    assert parsed.num_atoms == len(cluster) and parsed.num_potentials == 3 and parsed.edge == "K"
    feff10.validate(parsed)


def test_read_xmu_takes_energy_and_mu_and_rejects_missing_or_broken_files(tmp_path):
    path = tmp_path / "xmu.dat"
    path.write_text("# header\n#  omega e k mu mu0 chi\n280.0 0 0 0.5 0 0\n281.0 1 0.5 1.5 0 0\n")
    energy, mu = read_xmu(path)
    assert energy.tolist() == [280.0, 281.0] and mu.tolist() == [0.5, 1.5]
    with pytest.raises(FeffRunError, match="wrote no xmu.dat"):
        read_xmu(tmp_path / "missing" / "xmu.dat")
    path.write_text("# header\n280.0 0 0 nan 0 0\n281.0 1 0.5 1.5 0 0\n")
    with pytest.raises(FeffRunError, match="non-finite"):
        read_xmu(path)


def test_feff_rejecting_its_input_is_a_feff_run_error_with_feffs_reason():
    pytest.importorskip("feff10")
    text = "TITLE x\nEDGE K\nPOTENTIALS\n 0 6 C\nATOMS\n 0 0 0 0 C 0\n 1.4 0 0 3 C 1.4\nEND\n"
    with pytest.raises(FeffRunError, match="FEFF failed .*undefined ipot=3"):
        feff_module.run_feff(text)


# --- bad input --------------------------------------------------------------------------------------------------


def test_structure_without_the_absorbing_element_is_an_input_error():
    with pytest.raises(InputError, match="has no N atom to absorb at"):
        simulate_xanes(diamond(), FeffSettings("N", **TINY), runner=fake_spectrum)


def test_unknown_edge_absorber_or_inconsistent_radii_are_input_errors():
    with pytest.raises(InputError, match="unknown edge 'Q'"):
        FeffSettings("C", edge="Q")
    with pytest.raises(InputError, match="unknown absorbing element 'Xx'"):
        FeffSettings("Xx")
    with pytest.raises(InputError, match="FMS radius 7.0 Å is larger than the cluster radius 6.0 Å"):
        FeffSettings("C", fms_radius=7.0)
    with pytest.raises(InputError, match="unknown core-hole"):
        FeffSettings("C", corehole="half")
    assert FeffSettings("c", edge="l3").edge == "L3" and FeffSettings("c").absorber == "C"
    assert FeffSettings("C", scf_radius=0).scf_radius is None


def test_sites_all_count_or_indices():
    s = Structure.from_ase(bulk("SiC", "zincblende", a=4.36).repeat(2))
    carbons = np.flatnonzero(s.numbers == 6).tolist()
    assert parse_sites("all") == "all" and parse_sites("3") == 3 and parse_sites("5,") == [5]
    assert parse_sites(" 1, 4 ") == [1, 4]
    with pytest.raises(InputError, match="--sites"):
        parse_sites("some")
    assert select_sites(s, 6, "all") == carbons
    drawn = select_sites(s, 6, 3, seed=4)
    assert len(drawn) == 3 and set(drawn) <= set(carbons) and drawn == select_sites(s, 6, 3, seed=4)
    assert select_sites(s, 6, 100) == carbons
    assert select_sites(s, 6, carbons[:2]) == carbons[:2]
    silicon = int(np.flatnonzero(s.numbers == 14)[0])
    with pytest.raises(InputError, match=f"site {silicon} is Si, not the absorber C"):
        select_sites(s, 6, [silicon])
    with pytest.raises(InputError, match="not an atom"):
        select_sites(s, 6, [len(s)])
    with pytest.raises(InputError, match="at least 1"):
        select_sites(s, 6, 0)


# --- the environment cache --------------------------------------------------------------------------------------


def test_environment_key_ignores_rotation_and_translation_but_not_geometry_or_settings():
    settings = FeffSettings("C", **TINY)
    s, turned = graphite(), moved(graphite())
    keys = [environment_key(c, settings) for c in cut_clusters(s, range(4), 4.0)]
    keys_turned = [environment_key(c, settings) for c in cut_clusters(turned, range(4), 4.0)]
    assert keys == keys_turned
    # with the interlayer neighbours inside the cluster, AB graphite has two kinds of site
    assert len(set(keys)) == 2
    (cluster,) = cut_clusters(s, [0], 4.0)
    assert environment_key(cluster, FeffSettings("C", **{**TINY, "fms_radius": 2.5})) != keys[0]
    squeezed = s.replace(cell=s.cell * np.array([[1.0], [1.0], [0.98]]))
    assert environment_key(cut_clusters(squeezed, [0], 4.0)[0], settings) != keys[0]


def test_identical_sites_run_once_and_reruns_come_from_the_cache(tmp_path):
    cache = SpectrumCache(tmp_path / "cache")
    runner = CountingRunner()
    settings = FeffSettings("C", cluster_radius=4.0, fms_radius=3.0, scf_radius=3.0)
    first = simulate_xanes(graphite(), settings, cache=cache, runner=runner)
    assert runner.calls == 2 and first.computed == 2 and first.cached == 0  # two kinds of site among four
    assert first.sites == (0, 1, 2, 3) and len(list((tmp_path / "cache").glob("*.npz"))) == 2
    again = simulate_xanes(moved(graphite()), settings, cache=cache, runner=runner)
    assert runner.calls == 2 and again.computed == 0 and again.cached == 4
    np.testing.assert_allclose(again.spectra, first.spectra)
    np.testing.assert_allclose(again.mean, first.mean)


def test_progress_reports_every_site_up_to_the_total(tmp_path):
    seen = []
    simulate_xanes(
        random_carbon(), FeffSettings("C", **TINY), runner=fake_spectrum, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_spectra_share_one_grid_and_the_mean_is_their_average():
    result = simulate_xanes(random_carbon(), FeffSettings("C", **TINY), runner=fake_spectrum, grid_step=0.5)
    assert result.spectra.shape == (6, len(result.energy))
    assert np.allclose(np.diff(result.energy), 0.5)
    np.testing.assert_allclose(result.mean, result.spectra.mean(axis=0))
    clusters = cut_clusters(random_carbon(), range(6), 3.0)
    starts = [270.0 + 0.01 * len(c) for c in clusters]
    assert result.energy[0] >= max(starts) and result.energy[-1] <= min(starts) + 60.0


# --- failures ---------------------------------------------------------------------------------------------------


def test_a_failed_site_is_reported_skipped_and_not_cached(monkeypatch, tmp_path):
    monkeypatch.setattr(feff_module, "run_feff", failing_at_site_3)
    cache = SpectrumCache(tmp_path)
    result = simulate_xanes(random_carbon(), FeffSettings("C", **TINY), cache=cache)
    assert result.sites == (0, 1, 2, 4, 5)
    assert result.failed == (SiteFailure(3, "FeffRunError: FEFF failed: stage pot exited with status 1"),)
    np.testing.assert_allclose(result.mean, result.spectra.mean(axis=0))
    assert len(list(tmp_path.glob("*.npz"))) == 5
    retry = CountingRunner()
    assert simulate_xanes(random_carbon(), FeffSettings("C", **TINY), cache=cache, runner=retry).sites == tuple(
        range(6)
    )
    assert retry.calls == 1


def test_every_site_failing_is_an_error():
    def always_fails(text):
        raise FeffRunError("FEFF failed: no convergence")

    with pytest.raises(AtomdiffError, match="FEFF failed on every site"):
        simulate_xanes(random_carbon(3), FeffSettings("C", **TINY), runner=always_fails)


def test_sites_run_in_a_process_pool_give_the_same_result(tmp_path):
    serial = simulate_xanes(random_carbon(4), FeffSettings("C", **TINY), runner=failing_at_site_3)
    pooled = simulate_xanes(random_carbon(4), FeffSettings("C", **TINY), runner=failing_at_site_3, workers=2)
    assert pooled.sites == serial.sites == (0, 1, 2) and pooled.failed == serial.failed
    np.testing.assert_allclose(pooled.mean, serial.mean)


# --- FEFF itself: physics ---------------------------------------------------------------------------------------


def pi_star_ratio(energy: np.ndarray, mu: np.ndarray) -> float:
    """Largest μ 5–15 eV below the main (σ*) maximum, relative to that maximum: the π* region."""
    top = int(np.argmax(mu))
    window = (energy >= energy[top] - 15.0) & (energy <= energy[top] - 5.0)
    return float(mu[window].max() / mu[top])


@pytest.fixture(scope="module")
def feff_runs(tmp_path_factory):
    """Diamond and graphite through FEFF with tiny settings, counting the FEFF runs."""
    pytest.importorskip("feff10")
    runner = CountingRunner(feff_module.run_feff)
    cache = SpectrumCache(tmp_path_factory.mktemp("xanes-cache"))
    settings = FeffSettings("C", **TINY)
    results = {
        "diamond": simulate_xanes(diamond(), settings, cache=cache, runner=runner),
        "graphite": simulate_xanes(graphite(), settings, cache=cache, runner=runner),
    }
    return results, runner, cache, settings


def test_graphite_has_a_pi_star_peak_below_the_sigma_star_edge_and_diamond_does_not(feff_runs):
    results, runner, _, _ = feff_runs
    # both crystals have one kind of site within 3 Å (no interlayer neighbour in graphite): one run each
    assert runner.calls == 2
    g, d = results["graphite"], results["diamond"]
    assert g.sites == (0, 1, 2, 3) and d.sites == (0, 1) and not g.failed and not d.failed
    g_top, d_top = g.energy[np.argmax(g.mean)], d.energy[np.argmax(d.mean)]
    g_ratio, d_ratio = pi_star_ratio(g.energy, g.mean), pi_star_ratio(d.energy, d.mean)
    assert g_ratio > 0.4 > 0.3 > d_ratio
    # graphite's π* is a peak of its own: μ falls between it and the σ* edge
    window = (g.energy >= g_top - 15.0) & (g.energy <= g_top - 5.0)
    pi_star = g.energy[window][np.argmax(g.mean[window])]
    between = (g.energy > pi_star) & (g.energy < g_top)
    assert g.mean[between].min() < 0.8 * g.mean[window].max()
    assert 5.0 < g_top - pi_star < 15.0 and abs(g_top - d_top) < 5.0


def test_a_rotated_and_translated_crystal_gives_the_same_spectrum(feff_runs):
    results, runner, cache, settings = feff_runs
    before = runner.calls
    turned = simulate_xanes(moved(graphite()), settings, cache=cache, runner=runner)
    assert runner.calls == before and turned.cached == 4  # the cache knows the environment
    fresh = simulate_xanes(moved(graphite()), settings, runner=runner)  # no cache: FEFF runs again
    assert runner.calls == before + 1
    original = results["graphite"]
    mu = np.interp(original.energy, fresh.energy, fresh.mean)
    np.testing.assert_allclose(mu, original.mean, atol=2e-3 * original.mean.max())
