"""Periodic bicrystals with coincidence-site-lattice grain boundaries, built by pymatgen's
``GrainBoundaryGenerator`` (the maintained successor of the aimsgb algorithm, already a dependency; the
``aimsgb`` package itself pulls in the Materials Project client and pytest at run time).

A bicrystal is periodic in all three directions, so it holds two boundaries: one at the middle of the cell
and one at its edge (fractional c = 0.5 and 0). The cell's third vector is normal to the boundary plane
(``normal=True``), the first two span it; the boundary area is ``|a × b|``.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Sequence

import numpy as np

from atomdiff.errors import InputError
from atomdiff.structure.structure import Structure

KINDS = ("twist", "tilt")


@dataclasses.dataclass(frozen=True)
class Bicrystal:
    """A bicrystal and its boundary.

    Attributes:
        structure: the periodic bicrystal (boundaries normal to the third lattice vector).
        grain: ``(n,)`` 0 or 1, the grain of each atom: 0 in the upper half of the cell (pymatgen's top grain),
            1 in the lower.
        planes: fractional third coordinates of the two boundaries (0 and 0.5).
        sigma, axis, angle, plane, kind: the boundary's CSL Σ, rotation axis, angle (°), plane and kind.
    """

    structure: Structure
    grain: np.ndarray
    planes: tuple[float, float]
    sigma: int
    axis: tuple[int, int, int]
    angle: float
    plane: tuple[int, int, int]
    kind: str

    @property
    def area(self) -> float:
        """Area of one boundary, Å²."""
        a, b = self.structure.cell[0], self.structure.cell[1]
        return float(np.linalg.norm(np.cross(a, b)))

    def distance_to_boundary(self) -> np.ndarray:
        """``(n,)`` distance (Å) of every atom from the nearer of the two boundary planes."""
        c = np.asarray(self.structure.frac)[:, 2] % 1.0
        d = np.min([np.abs(c - p) for p in self.planes] + [np.abs(c - 1.0)], axis=0)
        height = self.structure.volume / self.area
        return d * height


def _triple(values: Sequence[int], what: str) -> tuple[int, int, int]:
    out = tuple(int(v) for v in values)
    if len(out) != 3 or not any(out):
        raise InputError(f"{what} must be three integers, not all zero, e.g. 1,0,0; got {list(values)}")
    return out  # type: ignore[return-value]


def _same_plane(a: Sequence[int], b: Sequence[int]) -> bool:
    """Parallel or antiparallel Miller indices (one plane)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(abs(a @ b) > (1 - 1e-9) * np.linalg.norm(a) * np.linalg.norm(b))


def csl_angle(sigma: int, axis: Sequence[int], plane: Sequence[int], kind: str) -> float:
    """The smallest rotation angle (°) about ``axis`` that makes a Σ``sigma`` boundary of ``kind`` on
    ``plane`` in a cubic crystal (``InputError`` listing what exists when there is none)."""
    from pymatgen.core.interface import GrainBoundaryGenerator

    if kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    angles = GrainBoundaryGenerator.enum_sigma_cubic(max(sigma, 1), list(axis)).get(sigma)
    if not angles:
        available = sorted(GrainBoundaryGenerator.enum_sigma_cubic(max(sigma, 25), list(axis)))
        raise InputError(f"no Σ{sigma} boundary about [{','.join(map(str, axis))}]; Σ values there: {available}")
    label = "Twist" if kind == "twist" else "Symmetric tilt"
    cutoff = int(np.max(np.abs(plane)))
    for angle in sorted(angles):
        planes = GrainBoundaryGenerator.enum_possible_plane_cubic(cutoff, list(axis), angle).get(label, [])
        if any(_same_plane(p[0], plane) for p in planes):
            return float(angle)
    raise InputError(
        f"({','.join(map(str, plane))}) is not a {kind} plane of the Σ{sigma} boundary about "
        f"[{','.join(map(str, axis))}] (a twist plane is normal to the axis, a symmetric tilt plane contains it)"
    )


def build_bicrystal(
    element: str,
    lattice: str,
    lattice_constant: float,
    sigma: int,
    plane: Sequence[int],
    kind: str = "twist",
    axis: Sequence[int] | None = None,
    expand_times: int = 2,
    in_plane: tuple[int, int] = (1, 1),
    ab_shift: tuple[float, float] = (0.0, 0.0),
    rm_ratio: float = 0.7,
) -> Bicrystal:
    """The Σ``sigma`` ``kind`` boundary on ``plane`` of an fcc or bcc element.

    Args:
        axis: rotation axis; a twist boundary's is its plane normal (the default); a tilt needs one.
        expand_times: grain thickness in units of the CSL period along the normal (pymatgen's parameter).
        in_plane: repeats of the boundary cell along its two in-plane vectors.
        ab_shift: rigid shift of one grain along the two in-plane vectors (fractions of them).
        rm_ratio: the builder merges atoms closer than ``rm_ratio`` × the bond length across a boundary
            (pymatgen's default 0.7); 0 keeps every lattice site of both grains.
    """
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure
    from pymatgen.core.interface import GrainBoundaryGenerator

    if lattice not in ("fcc", "bcc"):
        raise InputError(f"lattice must be fcc or bcc, got {lattice!r}")
    if lattice_constant <= 0:
        raise InputError(f"lattice constant must be positive, got {lattice_constant}")
    plane = _triple(plane, "--plane")
    if axis is None:
        if kind == "tilt":
            raise InputError("a tilt boundary needs its rotation --axis (e.g. 0,0,1 for the Σ5(310) tilt)")
        axis = plane
    axis = _triple(axis, "--axis")
    if expand_times < 1 or min(in_plane) < 1:
        raise InputError("expand_times and in-plane repeats must be at least 1")
    angle = csl_angle(sigma, axis, plane, kind)
    basis = (
        [[0, 0, 0], [0.5, 0.5, 0.5]] if lattice == "bcc" else [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    unit = PmgStructure(Lattice.cubic(lattice_constant), [element] * len(basis), basis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gb = GrainBoundaryGenerator(unit).gb_from_parameters(
            list(axis),
            angle,
            expand_times=expand_times,
            vacuum_thickness=0.0,
            ab_shift=list(ab_shift),
            plane=list(plane),
            normal=True,
            rm_ratio=rm_ratio,
        )
    if in_plane != (1, 1):
        gb = gb.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the supercell drops pymatgen's grain labels; `grain` does not use them
            gb.make_supercell([in_plane[0], in_plane[1], 1])
    # standard orientation: a along x, b in the xy plane, c (the boundary normal) along z
    from ase.geometry import cellpar_to_cell

    lengths, angles = gb.lattice.abc, gb.lattice.angles
    if abs(angles[0] - 90.0) > 1e-4 or abs(angles[1] - 90.0) > 1e-4:
        raise InputError("the builder returned a cell whose third vector is not normal to the boundary")
    structure = Structure(
        np.array([site.specie.Z for site in gb]), gb.frac_coords, cellpar_to_cell([*lengths, *angles])
    )
    # by position, not by pymatgen's labels: a supercell loses them, and an atom wrapped across the cell edge
    # keeps the label of its grain while sitting in the other half
    grain = np.where(structure.frac[:, 2] % 1.0 >= 0.5, 0, 1)
    return Bicrystal(structure, grain, (0.0, 0.5), int(sigma), axis, angle, plane, kind)


def grain_crystal(bicrystal: Bicrystal, half: int) -> Structure:
    """The perfect crystal of one grain filling the whole bicrystal cell: the grain between the boundary planes
    ``planes[half]`` and the next, continued through the other grain's place.

    The grain's lattice is read from its own atoms (an interior atom and three independent nearest-neighbour
    vectors spanning a primitive cell), so it holds for any boundary the builder makes; an ``InputError`` says
    when the cell is not a superlattice of the grain (then no periodic bulk of that orientation fits the cell).
    """
    s = bicrystal.structure
    cell = np.asarray(s.cell, dtype=np.float64)
    c = np.asarray(s.frac)[:, 2] % 1.0
    lower = bicrystal.planes[half]
    upper = bicrystal.planes[(half + 1) % 2] or 1.0
    inside = (c > lower) & (c < upper) if upper > lower else (c > lower) | (c < upper)
    interior = np.flatnonzero(inside & (bicrystal.distance_to_boundary() > 1.0))
    if len(interior) < 4:
        raise InputError("the grain is too thin to read its lattice from its atoms (use thicker grains)")
    positions = np.asarray(s.frac) @ cell
    origin = positions[interior[len(interior) // 2]]
    delta = np.asarray(s.frac)[interior] - np.asarray(s.frac)[interior[len(interior) // 2]]
    delta -= np.round(delta)
    vectors = delta @ cell
    lengths = np.linalg.norm(vectors, axis=1)
    nearest = vectors[(lengths > 1e-6) & (lengths < lengths[lengths > 1e-6].min() * 1.05)]
    triples = [nearest[list(t)] for t in itertools.combinations(range(len(nearest)), 3)]
    volumes = np.array([abs(np.linalg.det(t)) for t in triples])
    spanning = volumes > 0.1 * lengths[lengths > 1e-6].min() ** 3
    if not spanning.any():
        raise InputError("the grain's nearest-neighbour vectors do not span a cell (is it fcc or bcc?)")
    basis = triples[int(np.argmin(np.where(spanning, volumes, np.inf)))]  # a primitive cell: the smallest
    in_basis = cell @ np.linalg.inv(basis)
    if np.abs(in_basis - np.round(in_basis)).max() > 1e-3:
        raise InputError("the bicrystal cell is not a superlattice of this grain's lattice")
    in_basis = np.round(in_basis)
    basis = np.linalg.solve(in_basis, cell)  # exactly commensurate with the cell (atoms carry rounding noise)
    corners = np.array(list(itertools.product((0, 1), repeat=3))) @ in_basis
    lo, hi = np.floor(corners.min(axis=0)) - 1, np.ceil(corners.max(axis=0)) + 1
    ranges = [np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]
    n = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    frac = ((n @ basis + origin) @ np.linalg.inv(cell)) % 1.0
    keys = np.round(frac * 1e6).astype(np.int64) % 1_000_000  # one integer key per site of the cell
    _, first = np.unique(keys, axis=0, return_index=True)
    frac = frac[np.sort(first)]
    expected = int(round(abs(np.linalg.det(in_basis))))
    if len(frac) != expected:
        raise InputError(f"grain crystal: found {len(frac)} lattice sites, expected {expected}")
    return Structure(np.full(len(frac), int(s.numbers[0])), frac, cell)
