"""Structures labelled with per-site XANES from FEFF10: the data set that ``atomdiff train xanes`` reads.

Layout written under the data-set folder ``ROOT`` (read by :func:`atomdiff.data.spectra.read_spectrum_dataset`)::

    ROOT/settings.json                  FEFF settings, feff10-rs version and the energy grid of the whole data set
    ROOT/poscar/<split>/<name>.vasp     the structure (POSCAR, atoms in the input order)
    ROOT/xanes/<split>/<name>.csv       header: the grid energies in eV; then one row per absorbing atom, in order
                                        (with ``sites_per_structure``: header ``site,<energies>``, each row the
                                        index of its atom first)
    ROOT/failed.csv                     structures left out: split, name, source, site, reason (one row per site)

**The energy grid.** Every spectrum of the data set is put on one grid of photon energies, because the
surrogate learns one output per bin. Energies are FEFF's absolute photon energies ω (column 1 of
``xmu.dat``), not energies relative to each site's own edge: the chemical shift between sites (an sp² and
an sp³ carbon, an oxidised and a reduced cation) is part of the spectrum that is learnt and averaged. The
grid is ``emin, emin + step, ..., emax``. ``step`` defaults to 0.5 eV (about FEFF's energy resolution near
the edge after core-hole broadening; about 100 bins over the XANES window, as in the shared a-C data).
``emin``/``emax`` may be given; those not given are fixed by the first structure to finish: ``emin`` is the
latest first energy of its sites (FEFF starts a few eV below the edge, so the whole rise is kept) and
``emax`` is their earliest last energy less :data:`TOP_MARGIN` eV, which leaves room for structures whose
edges sit higher than the first one's. A grid taken from the computed spectra follows FEFF's own edge
position (which differs from tabulated edge energies by several eV and moves with the settings) without
the user having to know it. Once fixed, the grid is written to ``settings.json`` and kept for every later
run and split.

A site whose spectrum starts above ``emin`` gets its first value below its start (FEFF's lowest point is
pre-edge, below the Fermi level, where μ is flat and near zero); a site whose spectrum ends before
``emax`` is a failure (nothing measured is invented above the computed range).

**Some sites per structure.** FEFF costs seconds to minutes per site, and the sites of one cell share its
density and history, so a data set of a given FEFF budget covers more kinds of environment if it labels a few
sites of many structures instead of every site of a few. ``sites_per_structure = k`` labels k absorbing atoms
of each structure (all of a structure with fewer), drawn without replacement from a generator seeded by the
run's seed and the structure's name, so that resuming, or adding structures, draws the same sites. The surrogate
is trained per atom, so the unlabelled atoms only lack a target; they still make up the labelled atoms'
environments. The choice is made per split (``settings.json`` records each split's); a resumed split keeps it.

**Resuming.** A structure whose CSV and POSCAR are there is not touched; site spectra go to the environment
cache as each FEFF run ends, so an interrupted structure loses only the runs in progress. The CSV is written
before the POSCAR, each atomically, so the reader never finds a structure without its spectra. A structure
with a failed site is left out (the reader needs one row per absorbing atom) and listed in ``failed.csv``;
later runs skip it unless asked to retry. A folder holding other FEFF settings or another grid is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from importlib import metadata
from pathlib import Path

import numpy as np

from atomdiff.data.spectra import SITE_COLUMN
from atomdiff.errors import AtomdiffError, InputError
from atomdiff.files import atomic_path
from atomdiff.physics.xanes import feff as _feff
from atomdiff.physics.xanes.cache import SpectrumCache, environment_key
from atomdiff.physics.xanes.cluster import cut_clusters
from atomdiff.physics.xanes.feff import FeffSettings, feff_input
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.io import read_structure, read_structures, write_structures
from atomdiff.structure.structure import Structure

FORMAT = "atomdiff-xanes-dataset"
FORMAT_VERSION = 1
DEFAULT_STEP = 0.5
#: eV left between the first structure's earliest spectrum end and the top of an automatic grid
TOP_MARGIN = 10.0
FAILED_COLUMNS = ("split", "name", "source", "site", "reason")

Spectrum = tuple[np.ndarray, np.ndarray]
Runner = Callable[[str], Spectrum]
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class LabelInput:
    """One structure to label: its name in the data set, where it came from, and the structure."""

    name: str
    source: str
    structure: Structure


@dataclasses.dataclass(frozen=True)
class EnergyGrid:
    """The data set's photon energies, eV: ``emin, emin + step, ..., emax``."""

    emin: float
    emax: float
    step: float

    @property
    def energies(self) -> np.ndarray:
        n = int(round((self.emax - self.emin) / self.step)) + 1
        return self.emin + self.step * np.arange(n)


@dataclasses.dataclass
class LabelSummary:
    """What a run did.

    Attributes:
        written: structures labelled in this run.
        skipped: structures already in the data set (or listed as failed) and left alone.
        failed: structures left out in this run because a site failed.
        failed_sites: sites that failed in this run.
        computed: FEFF runs made.
        cached: sites whose spectrum came from the cache or from an identical site computed in this run.
        feff_seconds: wall time of the FEFF runs, summed over runs.
        grid: the data set's energy grid (``None`` if no structure has finished yet).
    """

    written: int = 0
    skipped: int = 0
    failed: int = 0
    failed_sites: int = 0
    computed: int = 0
    cached: int = 0
    feff_seconds: float = 0.0
    grid: EnergyGrid | None = None


# --- inputs ---------------------------------------------------------------------------------------------


def _clean_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text).strip(".") or "structure"


def load_inputs(paths: Sequence[str | Path]) -> list[LabelInput]:
    """Every structure in ``paths``, named after its file (``<stem>_<k>`` for the k-th of a multi-structure file).

    Names must be unique across the files (two ``POSCAR`` files in different folders clash: rename them).
    """
    if not paths:
        raise InputError("no structure files given")
    items: list[LabelInput] = []
    seen: dict[str, str] = {}
    for path in map(Path, paths):
        found = read_structures(path)
        stem = _clean_name(path.stem if path.suffix else path.name)
        for k, structure in enumerate(found):
            name = stem if len(found) == 1 else f"{stem}_{k:04d}"
            source = str(path) if len(found) == 1 else f"{path}@{k}"
            if name in seen:
                raise InputError(f"two structures would be named {name!r} ({seen[name]} and {source}); rename one")
            seen[name] = source
            items.append(LabelInput(name, source, structure))
    return items


# --- small file helpers ---------------------------------------------------------------------------------


def _number(value: float) -> str:
    return np.format_float_positional(float(value), precision=6, unique=True, trim="-")


def write_spectra_csv(
    path: Path, energies: np.ndarray, spectra: np.ndarray, sites: Sequence[int] | None = None
) -> None:
    """Header of energies (eV), then one row per absorbing atom; the file appears whole or not at all.

    With ``sites``, the header starts with ``site`` and each row with the index of its atom.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        lead = [SITE_COLUMN] if sites is not None else []
        writer.writerow(lead + [_number(e) for e in energies])
        for k, row in enumerate(spectra):
            lead = [str(int(sites[k]))] if sites is not None else []
            writer.writerow(lead + [f"{v:.7g}" for v in row])


def _read_failed(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_failed(path: Path, rows: list[dict[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(FAILED_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def _timed_run(runner: Runner, text: str) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    energy, mu = runner(text)
    return np.asarray(energy, dtype=np.float64), np.asarray(mu, dtype=np.float64), time.perf_counter() - start


@dataclasses.dataclass(eq=False)
class _Pending:
    """A structure whose site spectra are being computed."""

    item: LabelInput
    sites: list[int]
    keys: list[str]
    remaining: set[str]


# --- the generator --------------------------------------------------------------------------------------


class XanesDataGenerator:
    """Label structures with FEFF site spectra into a data-set folder (see the module docstring).

    Args:
        root: data-set folder (created; resumed if it holds a run with the same settings).
        settings: what FEFF computes for each site.
        split: sub-folder of ``poscar/`` and ``xanes/`` to write (``train``, ``val``, ``test``, ...).
        emin, emax, step: the energy grid, eV; ``None`` for the automatic choice (``step`` then 0.5 eV,
            or the step stored in ``settings.json``).
        cache: environment cache of site spectra; ``None`` keeps spectra in memory for this run only.
        workers: FEFF runs at once (processes); 1 runs them in this process, one after the other.
        retry_failed: compute again the structures that ``failed.csv`` lists for this split.
        runner: ``feff.inp`` text → ``(energy_eV, mu)``; default FEFF10 through feff10-rs.
        sites_per_structure: label this many absorbing atoms of each structure, drawn at random (``None``: all).
        seed: seed of that draw (with the structure's name).
    """

    def __init__(
        self,
        root: str | Path,
        settings: FeffSettings,
        split: str = "train",
        *,
        emin: float | None = None,
        emax: float | None = None,
        step: float | None = None,
        cache: SpectrumCache | None = None,
        workers: int = 1,
        retry_failed: bool = False,
        runner: Runner | None = None,
        sites_per_structure: int | None = None,
        seed: int = 0,
    ):
        if workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        split = str(split).strip()
        if not split or split != _clean_name(split) or split in (".", ".."):
            raise InputError(f"split must be a plain folder name (letters, digits, _ . + -), got {split!r}")
        for name, value in (("--emin", emin), ("--emax", emax), ("--step", step)):
            if value is not None and not math.isfinite(value):
                raise InputError(f"{name} must be a finite number of eV, got {value}")
        if step is not None and step <= 0:
            raise InputError(f"--step must be positive, got {step} eV")
        if emin is not None and emax is not None and not emax > emin:
            raise InputError(f"--emax ({emax} eV) must be above --emin ({emin} eV)")
        if sites_per_structure is not None and sites_per_structure < 1:
            raise InputError(f"--sites-per-structure must be at least 1, got {sites_per_structure}")
        self.root = Path(root)
        self.settings = settings
        self.split = split
        self.cache = cache
        self.workers = int(workers)
        self.retry_failed = retry_failed
        self.runner = runner
        self.sites_per_structure = sites_per_structure
        self.seed = int(seed)
        self._asked = {"emin": emin, "emax": emax, "step": step}
        self._grid_values: dict[str, float | None] = {}
        self._grid_from: str | None = None
        self._split_sites: dict[str, dict | None] = {}
        self._memory: dict[str, Spectrum] = {}

    # --- paths --------------------------------------------------------------------------------------------
    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    @property
    def failed_path(self) -> Path:
        return self.root / "failed.csv"

    def poscar_path(self, name: str) -> Path:
        return self.root / "poscar" / self.split / f"{name}.vasp"

    def xanes_path(self, name: str) -> Path:
        return self.root / "xanes" / self.split / f"{name}.csv"

    # --- settings -----------------------------------------------------------------------------------------
    def _feff_record(self) -> dict:
        try:
            version = metadata.version("feff10-rs")
        except metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
            version = "absent"
        return {"feff10-rs": version, "settings": dataclasses.asdict(self.settings)}

    def _sites_record(self) -> dict | None:
        if self.sites_per_structure is None:
            return None
        return {"per_structure": self.sites_per_structure, "seed": self.seed}

    def _record(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "feff": self._feff_record(),
            "sites": {**self._split_sites, self.split: self._sites_record()},
            "grid": {**self._grid_values, "from": self._grid_from},
            "energy": "FEFF photon energy omega (xmu.dat column 1), eV",
        }

    def _save_settings(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.settings_path) as tmp:
            tmp.write_text(json.dumps(self._record(), indent=1) + "\n")

    def _open(self) -> None:
        """Create ``settings.json``, or check the one there against these settings and take its grid."""
        asked = self._asked
        if not self.settings_path.is_file():
            self._grid_values = {
                "emin": asked["emin"],
                "emax": asked["emax"],
                "step": asked["step"] if asked["step"] is not None else DEFAULT_STEP,
            }
            self._save_settings()
            return
        try:
            old = json.loads(self.settings_path.read_text())
            old_feff, old_grid = old["feff"], old["grid"]
            stored = {key: old_grid[key] for key in ("emin", "emax", "step")}
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError("not the settings of an atomdiff XANES data set", path=str(self.settings_path)) from None
        if old.get("format") != FORMAT:
            raise InputError("not the settings of an atomdiff XANES data set", path=str(self.settings_path))
        if old_feff != self._feff_record():
            raise InputError(
                f"the folder holds spectra computed with other FEFF settings ({_diff(old_feff, self._feff_record())}); "
                "use the same settings to resume, or another folder",
                path=str(self.settings_path),
            )
        self._split_sites = dict(old.get("sites") or {})
        if self.split in self._split_sites and self._split_sites[self.split] != self._sites_record():
            raise InputError(
                f"the folder's split {self.split} labels {_describe_sites(self._split_sites[self.split])}, not "
                f"{_describe_sites(self._sites_record())}; use the same --sites-per-structure and --seed to resume, "
                "or another split or folder",
                path=str(self.settings_path),
            )
        for key, value in asked.items():
            if value is not None and stored[key] is not None and not math.isclose(value, stored[key], abs_tol=1e-9):
                raise InputError(
                    f"the folder's energy grid has {key} = {stored[key]} eV, not {value} eV; "
                    f"leave out --{key} to keep the folder's grid, or use another folder",
                    path=str(self.settings_path),
                )
        self._grid_values = {key: stored[key] if stored[key] is not None else asked[key] for key in stored}
        self._grid_from = old_grid.get("from")
        if self._grid_values != stored or self.split not in self._split_sites:
            self._save_settings()

    def _grid(self) -> EnergyGrid | None:
        values = self._grid_values
        if values.get("emin") is None or values.get("emax") is None:
            return None
        return EnergyGrid(float(values["emin"]), float(values["emax"]), float(values["step"]))

    def _fix_grid(self, name: str, spectra: Sequence[Spectrum]) -> EnergyGrid:
        """The grid, choosing the missing ends from the first finished structure's spectra."""
        grid = self._grid()
        if grid is not None:
            return grid
        step = float(self._grid_values["step"])
        values = dict(self._grid_values)
        if values["emin"] is None:
            values["emin"] = float(np.ceil(max(float(e[0]) for e, _ in spectra) / step - 1e-9) * step)
        if values["emax"] is None:
            top = min(float(e[-1]) for e, _ in spectra) - TOP_MARGIN
            values["emax"] = values["emin"] + float(np.floor((top - values["emin"]) / step + 1e-9)) * step
        if not values["emax"] > values["emin"]:
            raise AtomdiffError(
                f"no energy grid fits the spectra of {name} (from {values['emin']} to {values['emax']} eV): "
                "give --emin and --emax"
            )
        self._grid_values = {key: round(float(value), 9) for key, value in values.items()}
        self._grid_from = name
        self._save_settings()
        grid = self._grid()
        assert grid is not None
        return grid

    # --- one structure ------------------------------------------------------------------------------------
    def _done(self, name: str) -> bool:
        """The structure's files are there; a POSCAR missing after its CSV (interrupted between) is written."""
        return self.xanes_path(name).is_file() and self.poscar_path(name).is_file()

    def _sites(self, item: LabelInput) -> list[int]:
        """The absorbing atoms of ``item`` to label, ascending."""
        sites = np.flatnonzero(item.structure.numbers == self.settings.absorber_z)
        k = self.sites_per_structure
        if k is None or k >= len(sites):
            return sites.tolist()
        rng = np.random.default_rng([self.seed, zlib.crc32(item.name.encode())])
        return sorted(int(i) for i in rng.choice(sites, size=k, replace=False))

    def _plan(self, item: LabelInput) -> tuple[list[int], list[str], dict[str, str]]:
        sites = self._sites(item)
        clusters = cut_clusters(item.structure, sites, self.settings.cluster_radius)
        keys = [environment_key(c, self.settings) for c in clusters]
        texts = {}
        for key, cluster in zip(keys, clusters, strict=True):
            if key not in texts:
                title = f"atomdiff {item.name} site {cluster.site} {self.settings.absorber} {self.settings.edge}"
                texts[key] = feff_input(cluster, self.settings, title=title)
        return sites, keys, texts

    def _on_grid(self, spectrum: Spectrum, grid: EnergyGrid) -> np.ndarray:
        energy, mu = spectrum
        if energy[-1] < grid.emax - 1e-6:
            raise AtomdiffError(
                f"its spectrum ends at {energy[-1]:.2f} eV, below the data set's grid end {grid.emax:.2f} eV"
            )
        return np.interp(grid.energies, energy, mu)

    def _finish(
        self, pending: _Pending, results: dict[str, Spectrum], errors: dict[str, str], summary: LabelSummary
    ) -> None:
        item = pending.item
        reasons = {site: errors[key] for site, key in zip(pending.sites, pending.keys, strict=True) if key in errors}
        rows = None
        if not reasons:
            spectra = [results[key] for key in pending.keys]
            grid = self._fix_grid(item.name, spectra)
            rows = []
            for site, spectrum in zip(pending.sites, spectra, strict=True):
                try:
                    rows.append(self._on_grid(spectrum, grid))
                except AtomdiffError as exc:
                    reasons[site] = str(exc)
        if reasons:
            self._report_failure(item, reasons)
            summary.failed += 1
            summary.failed_sites += len(reasons)
            return
        indexed = self.sites_per_structure is not None
        write_spectra_csv(self.xanes_path(item.name), grid.energies, np.stack(rows), pending.sites if indexed else None)
        self._write_poscar(item)
        summary.written += 1

    def _write_poscar(self, item: LabelInput) -> None:
        path = self.poscar_path(item.name)
        write_structures(item.structure.replace(info={}), path)
        back = read_structure(path)
        if not np.array_equal(back.numbers, item.structure.numbers):  # pragma: no cover - ASE keeps the order
            path.unlink()
            raise AtomdiffError(f"the POSCAR written for {item.name} lists the atoms in another order")

    def _report_failure(self, item: LabelInput, reasons: dict[int, str]) -> None:
        rows = [r for r in _read_failed(self.failed_path) if (r["split"], r["name"]) != (self.split, item.name)]
        rows += [
            {"split": self.split, "name": item.name, "source": item.source, "site": str(site), "reason": reason}
            for site, reason in sorted(reasons.items())
        ]
        _write_failed(self.failed_path, rows)

    # --- run ----------------------------------------------------------------------------------------------
    def run(self, items: Sequence[LabelInput], progress: Progress | None = None) -> LabelSummary:
        """Label every structure of ``items`` not yet in the data set; ``progress(stage, done, total)``.

        Stages are ``structures`` and ``sites`` (absorbing sites of all structures).
        """
        z = self.settings.absorber_z
        missing = [item.source for item in items if not np.any(item.structure.numbers == z)]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"no {chemical_symbols[z]} atom to absorb at in {shown}")
        self._open()
        counts = [len(self._sites(item)) for item in items]
        failed_rows = _read_failed(self.failed_path)
        listed = {r["name"] for r in failed_rows if r["split"] == self.split}
        if self.retry_failed and listed:
            _write_failed(self.failed_path, [r for r in failed_rows if r["split"] != self.split])
            listed = set()
        summary = LabelSummary(grid=self._grid())
        todo: list[tuple[LabelInput, int]] = []
        for item, n in zip(items, counts, strict=True):
            if self.xanes_path(item.name).is_file():
                self._check_existing(item)
                if not self.poscar_path(item.name).is_file():
                    self._write_poscar(item)
                summary.skipped += 1
            elif item.name in listed:
                summary.skipped += 1
            else:
                todo.append((item, n))
        total_sites = sum(counts)
        state = {"structures": len(items) - len(todo), "sites": total_sites - sum(n for _, n in todo)}

        def report() -> None:
            if progress is not None:
                progress("structures", state["structures"], len(items))
                progress("sites", state["sites"], total_sites)

        report()
        self._label(todo, summary, state, report)
        summary.grid = self._grid()
        return summary

    def _check_existing(self, item: LabelInput) -> None:
        path = self.xanes_path(item.name)
        with open(path, newline="") as fh:
            table = list(csv.reader(fh))
        sites = self._sites(item)
        indexed = self.sites_per_structure is not None
        ok = len(table) - 1 == len(sites) and bool(table) and (table[0][:1] == [SITE_COLUMN]) == indexed
        if ok and indexed:
            ok = [row[0] for row in table[1:]] == [str(i) for i in sites]
        grid = self._grid()
        if ok and grid is not None:
            header = np.array([float(v) for v in table[0][1 if indexed else 0 :]])
            ok = header.shape == grid.energies.shape and np.allclose(header, grid.energies, atol=1e-4)
        if not ok:
            raise InputError(
                f"the spectra there do not belong to {item.source} ({len(sites)} sites to label) on this data set's "
                "grid; remove the file or give the structure another name",
                path=str(path),
            )

    def _label(
        self,
        todo: list[tuple[LabelInput, int]],
        summary: LabelSummary,
        state: dict[str, int],
        report: Callable[[], None],
    ) -> None:
        runner = self.runner or _feff.run_feff
        results = self._memory
        errors: dict[str, str] = {}
        waiting: dict[str, list[_Pending]] = {}

        def resolve(key: str, outcome: tuple[np.ndarray, np.ndarray, float] | None, reason: str | None) -> None:
            if outcome is not None:
                energy, mu, seconds = outcome
                results[key] = (energy, mu)
                summary.computed += 1
                summary.feff_seconds += seconds
                if self.cache is not None:
                    self.cache.put(key, energy, mu)
            else:
                errors[key] = reason or "unknown failure"
            for pending in waiting.pop(key, []):
                pending.remaining.discard(key)
                state["sites"] += pending.keys.count(key)
                if not pending.remaining:
                    self._finish(pending, results, errors, summary)
                    state["structures"] += 1
            report()

        def lookup(key: str) -> bool:
            if key in results or key in errors:
                return True
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                results[key] = hit
            return hit is not None

        def start(item: LabelInput) -> dict[str, str]:
            """Register a structure; returns the ``feff.inp`` texts of its environments still to run."""
            sites, keys, texts = self._plan(item)
            pending = _Pending(item, sites, keys, set())
            new = {}
            for key in texts:
                if lookup(key):
                    continue
                pending.remaining.add(key)
                if key not in waiting:
                    new[key] = texts[key]
                waiting.setdefault(key, []).append(pending)
            ready = sum(key not in pending.remaining for key in keys)
            # sites that need no run of their own: found, a duplicate of a new run, or waiting on another's
            summary.cached += sum(key in results for key in keys)
            summary.cached += sum(keys.count(k) - (k in new) for k in pending.remaining)
            state["sites"] += ready
            if not pending.remaining:
                self._finish(pending, results, errors, summary)
                state["structures"] += 1
            report()
            return new

        if self.workers == 1:
            for item, _ in todo:
                for key, text in start(item).items():
                    try:
                        outcome = _timed_run(runner, text)
                    except Exception as exc:  # one bad site must not stop the others
                        resolve(key, None, f"{type(exc).__name__}: {exc}")
                    else:
                        resolve(key, outcome, None)
            return
        self._label_parallel(todo, runner, start, resolve)

    def _label_parallel(
        self,
        todo: list[tuple[LabelInput, int]],
        runner: Runner,
        start: Callable[[LabelInput], dict[str, str]],
        resolve: Callable[[str, tuple[np.ndarray, np.ndarray, float] | None, str | None], None],
    ) -> None:
        """FEFF runs in a process pool, at most ``2 × workers`` submitted at once, in the order of the structures."""
        inflight: dict[Future, str] = {}
        queue: Iterable[tuple[str, str]] = (pair for item, _ in todo for pair in start(item).items())
        pool = ProcessPoolExecutor(max_workers=self.workers)

        def collect(block: bool) -> None:
            done, _ = wait(list(inflight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for future in done:
                key = inflight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # one bad site must not stop the others
                    resolve(key, None, f"{type(exc).__name__}: {exc}")
                else:
                    resolve(key, outcome, None)

        try:
            for key, text in queue:
                while len(inflight) >= 2 * self.workers:
                    collect(block=True)
                inflight[pool.submit(_timed_run, runner, text)] = key
                collect(block=False)
            while inflight:
                collect(block=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _describe_sites(record: dict | None) -> str:
    if not record:
        return "every absorbing site"
    return f"{record.get('per_structure')} sites per structure drawn with seed {record.get('seed')}"


def _diff(old: dict, new: dict) -> str:
    """``name: old → new`` for the FEFF settings that differ."""
    parts = []
    if old.get("feff10-rs") != new.get("feff10-rs"):
        parts.append(f"feff10-rs {old.get('feff10-rs')} → {new.get('feff10-rs')}")
    a, b = old.get("settings", {}) or {}, new.get("settings", {}) or {}
    parts += [f"{k}: {a.get(k)} → {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(parts) or "unreadable"
