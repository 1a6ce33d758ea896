"""Site-averaged XANES of a periodic structure: pick sites, cut clusters, run FEFF (cached), average."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from atomdiff.errors import AtomdiffError, InputError
from atomdiff.physics.xanes import feff as _feff
from atomdiff.physics.xanes.cache import SpectrumCache, environment_key
from atomdiff.physics.xanes.cluster import cut_clusters
from atomdiff.physics.xanes.feff import FeffSettings, feff_input
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.structure import Structure

Spectrum = tuple[np.ndarray, np.ndarray]
Runner = Callable[[str], Spectrum]
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class SiteFailure:
    """A site whose spectrum could not be computed, and why; it is left out of the average."""

    site: int
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class XanesResult:
    """Per-site spectra on one energy grid and their average.

    Attributes:
        energy: common grid of photon energies, eV, shape ``(n_energy,)``.
        sites: indices (in the structure) of the sites that succeeded, in the order asked for.
        spectra: ``(n_sites, n_energy)`` normalised μ of each site in ``sites``.
        mean: average of ``spectra`` over sites.
        failed: sites that failed, with the reason.
        computed: FEFF runs made (distinct environments that were not in the cache).
        cached: sites whose spectrum came from the cache.
    """

    energy: np.ndarray
    sites: tuple[int, ...]
    spectra: np.ndarray
    mean: np.ndarray
    failed: tuple[SiteFailure, ...]
    computed: int
    cached: int


def parse_sites(text: str | None) -> str | int | list[int]:
    """``"all"`` → ``"all"``; ``"8"`` → ``8`` (that many sites, drawn at random); ``"0,5,9"`` → indices.

    A single index is written with a trailing comma: ``"5,"``.
    """
    text = (text or "all").strip().lower()
    if text == "all":
        return "all"
    try:
        if "," in text:
            return [int(item) for item in text.split(",") if item.strip()]
        return int(text)
    except ValueError:
        raise InputError(f"--sites must be 'all', a count, or comma-separated indices; got {text!r}") from None


def select_sites(
    structure: Structure, absorber_z: int, sites: str | int | Sequence[int] = "all", seed: int = 0
) -> list[int]:
    """Indices of the absorbing atoms to compute: all of them, ``sites`` drawn at random, or those listed."""
    candidates = np.flatnonzero(structure.numbers == absorber_z)
    symbol = chemical_symbols[absorber_z]
    if candidates.size == 0:
        raise InputError(f"the structure ({structure.formula}) has no {symbol} atom to absorb at")
    if isinstance(sites, str):
        if sites != "all":
            raise InputError(f"sites must be 'all', a count or a list of indices, got {sites!r}")
        return candidates.tolist()
    if isinstance(sites, int | np.integer):
        if sites < 1:
            raise InputError(f"number of sites must be at least 1, got {sites}")
        if sites >= candidates.size:
            return candidates.tolist()
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(candidates, size=int(sites), replace=False).tolist())
    chosen = [int(s) for s in sites]
    if not chosen:
        raise InputError("no site indices given")
    for s in chosen:
        if not 0 <= s < len(structure):
            raise InputError(f"site {s} is not an atom of the structure (indices 0..{len(structure) - 1})")
        if structure.numbers[s] != absorber_z:
            raise InputError(f"site {s} is {chemical_symbols[structure.numbers[s]]}, not the absorber {symbol}")
    if len(set(chosen)) != len(chosen):
        raise InputError(f"site indices repeat: {chosen}")
    return chosen


def common_grid(spectra: Sequence[Spectrum], step: float) -> np.ndarray:
    """A uniform energy grid, ``step`` eV apart, over the range that every spectrum covers."""
    lo = max(float(e[0]) for e, _ in spectra)
    hi = min(float(e[-1]) for e, _ in spectra)
    if not hi > lo:
        raise AtomdiffError(f"the site spectra share no energy range (latest start {lo:.2f} eV, end {hi:.2f} eV)")
    start = np.ceil(lo / step) * step
    return np.arange(start, hi + 1e-9, step)


def _run(runner: Runner, text: str) -> Spectrum:
    energy, mu = runner(text)
    return np.asarray(energy, dtype=np.float64), np.asarray(mu, dtype=np.float64)


def simulate_xanes(
    structure: Structure,
    settings: FeffSettings,
    sites: str | int | Sequence[int] = "all",
    *,
    workers: int = 1,
    cache: SpectrumCache | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    grid_step: float = 0.1,
    runner: Runner | None = None,
) -> XanesResult:
    """XANES of ``structure`` at ``settings.absorber``'s ``settings.edge``, per site and averaged.

    Sites with the same environment (see :func:`environment_key`) are computed once; spectra in ``cache``
    are not computed again, and new ones are added to it. ``runner`` turns a ``feff.inp`` text into
    ``(energy_eV, mu)`` (default: FEFF10 through feff10-rs); it must be picklable when ``workers > 1``.
    A site whose run fails is listed in ``failed`` and left out; if every site fails, it is an error.
    ``progress(done, total)`` is called as sites finish.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if not (np.isfinite(grid_step) and grid_step > 0):
        raise InputError(f"energy grid step must be positive, got {grid_step}")
    runner = runner or _feff.run_feff
    chosen = select_sites(structure, settings.absorber_z, sites, seed)
    clusters = cut_clusters(structure, chosen, settings.cluster_radius)
    keys = [environment_key(c, settings) for c in clusters]
    total = len(chosen)
    results: dict[str, Spectrum] = {}
    errors: dict[str, str] = {}
    for key in dict.fromkeys(keys):
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            results[key] = hit
    cached = sum(key in results for key in keys)
    todo = {}
    for key, cluster in zip(keys, clusters, strict=True):
        if key not in results and key not in todo:
            title = f"atomdiff {structure.formula} site {cluster.site} {settings.absorber} {settings.edge}"
            todo[key] = feff_input(cluster, settings, title=title)
    done = cached
    if progress is not None:
        progress(done, total)

    def finish(key: str, outcome: Spectrum | None, reason: str | None) -> None:
        nonlocal done
        if outcome is not None:
            results[key] = outcome
            if cache is not None:
                cache.put(key, *outcome)
        else:
            errors[key] = reason or "unknown failure"
        done += keys.count(key)
        if progress is not None:
            progress(done, total)

    if workers == 1 or len(todo) <= 1:
        for key, text in todo.items():
            try:
                finish(key, _run(runner, text), None)
            except Exception as exc:  # one bad site must not stop the others
                finish(key, None, f"{type(exc).__name__}: {exc}")
    else:
        # the platform's start method: fork on Linux, which spares each worker importing atomdiff (and torch)
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = {pool.submit(_run, runner, text): key for key, text in todo.items()}
            for future in as_completed(futures):
                try:
                    finish(futures[future], future.result(), None)
                except Exception as exc:  # one bad site must not stop the others
                    finish(futures[future], None, f"{type(exc).__name__}: {exc}")
    return _assemble(chosen, keys, results, errors, len(todo) - len(errors), cached, grid_step)


def _assemble(
    chosen: list[int],
    keys: list[str],
    results: dict[str, Spectrum],
    errors: dict[str, str],
    computed: int,
    cached: int,
    grid_step: float,
) -> XanesResult:
    failed = tuple(SiteFailure(site, errors[key]) for site, key in zip(chosen, keys, strict=True) if key in errors)
    good = [(site, key) for site, key in zip(chosen, keys, strict=True) if key in results]
    if not good:
        reasons = "; ".join(f"site {f.site}: {f.reason}" for f in failed[:3])
        raise AtomdiffError(f"FEFF failed on every site ({len(failed)}): {reasons}")
    energy = common_grid([results[key] for _, key in good], grid_step)
    spectra = np.stack([np.interp(energy, *results[key]) for _, key in good])
    return XanesResult(
        energy=energy,
        sites=tuple(site for site, _ in good),
        spectra=spectra,
        mean=spectra.mean(axis=0),
        failed=failed,
        computed=computed,
        cached=cached,
    )
