"""FEFF10 for one site: settings, the ``feff.inp`` text, the run through feff10-rs, and ``xmu.dat``.

FEFF runs through the ``feff10`` Python package (PyPI ``feff10-rs``), which ships FEFF10 compiled and runs
each FEFF stage in a fresh worker process of the current interpreter; no separately installed FEFF is used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from atomdiff.errors import AtomdiffError, InputError
from atomdiff.physics.xanes.cluster import Cluster
from atomdiff.structure.elements import atomic_number, chemical_symbols

EDGES = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5", "N1", "N2", "N3", "N4", "N5", "N6", "N7")
COREHOLES = ("RPA", "FSR", "NONE")


class FeffRunError(AtomdiffError):
    """FEFF did not produce a usable spectrum for a site."""


@dataclasses.dataclass(frozen=True)
class FeffSettings:
    """What FEFF computes for each absorbing site.

    Attributes:
        absorber: element symbol of the absorbing atoms (``"C"``).
        edge: absorption edge (``K``, ``L1``–``L3``, ``M1``–``M5``, ``N1``–``N7``).
        cluster_radius: atoms within this distance of the absorber form the cluster, Å.
        fms_radius: full-multiple-scattering radius, Å.
        scf_radius: self-consistent-potential radius, Å; ``None`` or 0 for overlapped atomic potentials.
        corehole: core-hole treatment: ``RPA`` (screened), ``FSR`` (final-state rule) or ``NONE``.
        xkmax: XANES range above the edge in photoelectron wavenumber, Å⁻¹ (4 Å⁻¹ ≈ 61 eV).
        s02: amplitude reduction factor.
    """

    absorber: str
    edge: str = "K"
    cluster_radius: float = 6.0
    fms_radius: float = 5.0
    scf_radius: float | None = 4.0
    corehole: str = "RPA"
    xkmax: float = 4.0
    s02: float = 1.0

    def __post_init__(self) -> None:
        z = atomic_number(self.absorber, what="absorbing element")
        object.__setattr__(self, "absorber", chemical_symbols[z])
        edge = str(self.edge).strip().upper()
        if edge not in EDGES:
            raise InputError(f"unknown edge {self.edge!r}: FEFF edges are {', '.join(EDGES)}")
        object.__setattr__(self, "edge", edge)
        corehole = str(self.corehole).strip().upper()
        if corehole not in COREHOLES:
            raise InputError(f"unknown core-hole treatment {self.corehole!r}: use one of {', '.join(COREHOLES)}")
        object.__setattr__(self, "corehole", corehole)
        scf = self.scf_radius or None
        object.__setattr__(self, "scf_radius", None if scf is None else float(scf))
        for name in ("cluster_radius", "fms_radius", "xkmax", "s02"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"{name.replace('_', ' ')} must be a positive number, got {value}")
            object.__setattr__(self, name, value)
        if self.scf_radius is not None and not (np.isfinite(self.scf_radius) and self.scf_radius > 0):
            raise InputError(f"SCF radius must be a positive number of Å (or 0 for none), got {self.scf_radius}")
        for name, value in (("FMS", self.fms_radius), ("SCF", self.scf_radius)):
            if value is not None and value > self.cluster_radius:
                raise InputError(
                    f"{name} radius {value} Å is larger than the cluster radius {self.cluster_radius} Å: "
                    "raise --cluster-radius or lower the other radius"
                )

    @property
    def absorber_z(self) -> int:
        return atomic_number(self.absorber)


def feff_input(cluster: Cluster, settings: FeffSettings, title: str = "atomdiff XANES") -> str:
    """The ``feff.inp`` text of a XANES calculation on ``cluster``.

    Potential 0 is the absorber; potentials 1, 2, ... are the elements of the other atoms in order of
    atomic number (the absorbing element included when other atoms of it are in the cluster).
    """
    if cluster.numbers[0] != settings.absorber_z:
        raise InputError(
            f"site {cluster.site} is {chemical_symbols[cluster.numbers[0]]}, not the absorber {settings.absorber}"
        )
    others = sorted({int(z) for z in cluster.numbers[1:]})
    ipot = {z: k + 1 for k, z in enumerate(others)}
    lines = [
        f"TITLE {title}",
        f"EDGE {settings.edge}",
        f"S02 {settings.s02:g}",
        "CONTROL 1 1 1 1 1 1",
        "PRINT 0 0 0 0 0 0",
        f"XANES {settings.xkmax:g} 0.07 0.0",
        f"FMS {settings.fms_radius:g} 0",
        f"COREHOLE {settings.corehole}",
    ]
    if settings.scf_radius is not None:
        lines.append(f"SCF {settings.scf_radius:g} 0 30 0.2 1")
    lines += ["", "POTENTIALS", "*  ipot   Z  tag"]
    lines.append(f"   0 {settings.absorber_z:4d}  {settings.absorber}")
    lines += [f"   {ipot[z]} {z:4d}  {chemical_symbols[z]}" for z in others]
    lines += ["", "ATOMS", "*        x           y           z   ipot  tag   distance"]
    for k, (z, xyz, d) in enumerate(zip(cluster.numbers, cluster.positions, cluster.distances, strict=True)):
        p = 0 if k == 0 else ipot[int(z)]
        lines.append(f"  {xyz[0]:11.6f} {xyz[1]:11.6f} {xyz[2]:11.6f} {p:4d}  {chemical_symbols[z]:<3s} {d:10.6f}")
    lines += ["END", ""]
    return "\n".join(lines)


def read_xmu(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(energy_eV, mu)`` from a FEFF ``xmu.dat``: photon energy ω (column 1) and normalised μ (column 4)."""
    path = Path(path)
    if not path.is_file():
        raise FeffRunError(f"FEFF wrote no {path.name}")
    try:
        table = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as exc:
        raise FeffRunError(f"{path.name} is not a numeric table: {exc}") from None
    if table.shape[0] < 2 or table.shape[1] < 4:
        raise FeffRunError(f"{path.name} has {table.shape[0]} rows of {table.shape[1]} columns; expected ≥ 2 × 4")
    energy, mu = table[:, 0], table[:, 3]
    if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(mu))):
        raise FeffRunError(f"{path.name} contains non-finite values")
    if np.any(np.diff(energy) <= 0):
        raise FeffRunError(f"{path.name} energies are not increasing")
    return energy, mu


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


# Runs in a fresh interpreter that imports only feff10 (which itself runs each FEFF stage in a worker of
# that interpreter), so FEFF's Fortran chatter goes to the log file and never to this process's terminal.
_CHILD = "import sys, feff10; feff10.run(feff10.FeffInput.from_file_strict(sys.argv[1]), sys.argv[2])"


def run_feff(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Run FEFF10 (through feff10-rs) on a ``feff.inp`` text in a temporary folder; ``(energy_eV, mu)``.

    Raises :class:`FeffRunError` with FEFF's last words when a stage fails or no spectrum comes out.
    """
    if importlib.util.find_spec("feff10") is None:  # pragma: no cover - it is a dependency
        raise AtomdiffError("XANES needs FEFF10: pip install feff10-rs==0.2.4")
    with tempfile.TemporaryDirectory(prefix="atomdiff-feff-") as tmp:
        source, work, log = Path(tmp) / "site.inp", Path(tmp) / "feff", Path(tmp) / "feff.log"
        source.write_text(text)
        work.mkdir()
        with open(log, "wb") as out:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(source), str(work)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            detail = _tail(log)
            raise FeffRunError(f"FEFF failed (exit status {done.returncode})" + (f": {detail}" if detail else ""))
        return read_xmu(work / "xmu.dat")
