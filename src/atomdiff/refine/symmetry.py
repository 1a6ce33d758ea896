"""Space-group constraints for least squares: the free parameters of a structure that keep its symmetry.

Rietveld programs refine a structure in its space group: the lattice has only the parameters its crystal
system allows (2 for tetragonal, 1 for cubic), and each atom moves only along the directions its site symmetry
leaves free (an atom on an inversion centre or a 4̄ axis does not move; a sulphur on a general position has
x, y, z), the atoms of one orbit moving together as the symmetry operations dictate. Refining in P1 instead
lets counting noise pull atoms off their special positions, adds parameters that the data cannot determine,
and so blurs the comparison of two candidates (kesterite and stannite differ only in how Cu and Zn order).

:func:`symmetry_constraints` derives those free parameters from the space-group operations that spglib finds
in a structure (the structure should already be symmetric to well within ``symprec``; the solve symmetrises
its candidates first). They are linear maps, which :class:`~atomdiff.refine.RietveldRefiner` uses in place of
its P1 parameters:

- the strain ε of the lattice (``cell' = cell (1 + ε)``, Cartesian, symmetric) must commute with every
  rotation R of the point group, ε = R ε Rᵀ: the Reynolds average of the six elementary symmetric strains over
  the group spans the allowed ones;
- the displacement of the representative atom of an orbit must be fixed by its site-symmetry group: the mean
  of the stabiliser's rotations (fractional) projects onto the allowed directions; every other atom of the orbit
  moves by W δ, W the rotation of the operation that maps the representative onto it.

These are exact statements about the group, written here (in numpy, from spglib's operations) because the
libraries of the field give Wyckoff letters and site symmetries as symbols, not as the projectors least squares
needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from atomdiff.errors import InputError
from atomdiff.structure.structure import Structure

#: strain components in the order the refiner stores them: xx, yy, zz, xy, xz, yz
_VOIGT = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclasses.dataclass(frozen=True)
class SymmetryConstraints:
    """The free parameters of one structure in its space group.

    Attributes:
        space_group: Hermann–Mauguin symbol and number, e.g. ``"I-4 (82)"``.
        strain_basis: ``(6, k)``: the allowed lattice strains (components xx, yy, zz, xy, xz, yz), orthonormal.
        position_basis: ``(3 n_atoms, f)``: fractional displacements of all atoms (row ``3 i + c`` is atom i's
            component c) for each free positional parameter; ``f`` may be 0.
        orbits: the orbit (index of its representative atom) of every atom.
    """

    space_group: str
    strain_basis: np.ndarray
    position_basis: np.ndarray
    orbits: np.ndarray

    @property
    def n_lattice(self) -> int:
        return int(self.strain_basis.shape[1])

    @property
    def n_positions(self) -> int:
        return int(self.position_basis.shape[1])

    @classmethod
    def p1(cls, n_atoms: int) -> SymmetryConstraints:
        """No symmetry: every strain and every coordinate free."""
        return cls("P1 (1)", np.eye(6), np.eye(3 * n_atoms), np.arange(n_atoms))


def _span(vectors: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """An orthonormal basis (columns) of the span of the columns of ``vectors``."""
    if vectors.size == 0:
        return np.zeros((vectors.shape[0], 0))
    u, s, _ = np.linalg.svd(vectors, full_matrices=False)
    rank = int((s > tol * max(1.0, float(s[0]) if s.size else 1.0)).sum())
    out = u[:, :rank]
    # a sign convention, so that the same structure always gives the same parameters
    signs = np.sign(out[np.argmax(np.abs(out), axis=0), np.arange(rank)])
    return out * np.where(signs == 0, 1.0, signs)


def _wrapped_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.asarray(a) - np.asarray(b)
    return d - np.round(d)


def symmetrised(structure: Structure, symprec: float = 1e-3) -> Structure:
    """``structure`` with the symmetry spglib finds within ``symprec`` (Å) made exact, in the same cell setting,
    orientation and atom order: the metric averaged over the point group (G' = ⟨Wᵀ G W⟩, the cell moved to it by
    the smallest stretch), each orbit's representative averaged over its stabiliser and the other atoms placed
    as its images. Least squares under :func:`symmetry_constraints` then keeps the symmetry exactly."""
    import spglib

    cell = (np.asarray(structure.cell), np.asarray(structure.frac) % 1.0, np.asarray(structure.numbers))
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None or dataset.number == 1:
        return structure
    rotations = np.asarray(dataset.rotations, dtype=float)
    translations = np.asarray(dataset.translations, dtype=float)
    lattice = np.asarray(structure.cell, dtype=float)
    metric = lattice @ lattice.T
    target = np.einsum("nji,jk,nkl->il", rotations, metric, rotations) / len(rotations)

    def sqrtm(m: np.ndarray, power: float) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * w**power) @ v.T

    new_lattice = sqrtm(target, 0.5) @ sqrtm(metric, -0.5) @ lattice
    frac = np.array(structure.frac, dtype=float)
    tol = 2 * symprec / min(np.linalg.norm(lattice, axis=1))
    images = np.einsum("nij,aj->nai", rotations, frac) + translations[:, None, :]
    orbits = np.asarray(dataset.equivalent_atoms)
    out = frac.copy()
    for rep in np.unique(orbits):
        fixed = np.abs(_wrapped_difference(images[:, rep], frac[rep])).max(-1) < tol
        # each stabiliser image, moved by whole lattice vectors next to the atom, then averaged
        centre = frac[rep] + _wrapped_difference(images[fixed, rep], frac[rep]).mean(0)
        for atom in np.flatnonzero(orbits == rep):
            hits = np.flatnonzero(np.abs(_wrapped_difference(images[:, rep], frac[atom])).max(-1) < tol)
            if hits.size == 0:
                raise InputError(f"atom {atom} is not an image of atom {rep} under {dataset.international}")
            image = rotations[hits[0]] @ centre + translations[hits[0]]
            out[atom] = frac[atom] + _wrapped_difference(image, frac[atom])
    return structure.replace(frac=out, cell=new_lattice)


def symmetry_constraints(structure: Structure, symprec: float = 1e-3) -> SymmetryConstraints:
    """The space group of ``structure`` within ``symprec`` (Å) and the strains and atomic displacements that keep
    it; P1 (everything free) when spglib finds no symmetry. The structure must be symmetric to well within
    ``symprec`` (each operation maps every atom onto an atom of its element to within it), else the
    parameters would not keep the symmetry: an :class:`InputError` says so."""
    import spglib

    cell = (np.asarray(structure.cell), np.asarray(structure.frac) % 1.0, np.asarray(structure.numbers))
    n = len(structure)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None or dataset.number == 1:
        return SymmetryConstraints.p1(n)
    rotations = np.asarray(dataset.rotations, dtype=float)  # fractional, acting on column vectors
    translations = np.asarray(dataset.translations, dtype=float)
    frac = np.asarray(structure.frac, dtype=float)
    lattice = np.asarray(structure.cell, dtype=float)  # rows: lattice vectors, r = Aᵀ f
    tol = 2 * symprec / min(np.linalg.norm(lattice, axis=1))  # fractional tolerance along the shortest vector

    # lattice: Reynolds average of each elementary strain over the Cartesian point group
    to_cart, to_frac = lattice.T, np.linalg.inv(lattice.T)
    cart_rotations = np.einsum("ij,njk,kl->nil", to_cart, rotations, to_frac)
    projected = []
    for i, j in _VOIGT:
        e = np.zeros((3, 3))
        e[i, j] = e[j, i] = 1.0
        avg = np.einsum("nij,jk,nlk->il", cart_rotations, e, cart_rotations) / len(cart_rotations)
        projected.append([avg[a, b] for a, b in _VOIGT])
    strain_basis = _span(np.asarray(projected).T)

    # positions: where each operation sends each atom
    images = np.einsum("nij,aj->nai", rotations, frac) + translations[:, None, :]  # (ops, atoms, 3)
    orbits = np.asarray(dataset.equivalent_atoms)
    columns: list[np.ndarray] = []
    for rep in np.unique(orbits):
        members = np.flatnonzero(orbits == rep)
        # stabiliser of the representative: operations mapping it onto itself (modulo lattice translations)
        fixed = np.abs(_wrapped_difference(images[:, rep], frac[rep])).max(-1) < tol
        projector = rotations[fixed].mean(0)
        local = _span(projector)  # allowed displacements of the representative (fractional)
        if local.shape[1] == 0:
            continue
        block = np.zeros((3 * n, local.shape[1]))
        for atom in members:
            hits = np.flatnonzero(np.abs(_wrapped_difference(images[:, rep], frac[atom])).max(-1) < tol)
            if hits.size == 0 or structure.numbers[atom] != structure.numbers[rep]:
                raise InputError(
                    f"atom {atom} is not an image of atom {rep} under the symmetry spglib found "
                    f"({dataset.international}); symmetrise the structure first"
                )
            block[3 * atom : 3 * atom + 3] = rotations[hits[0]] @ local
        columns.append(block)
    position_basis = np.concatenate(columns, axis=1) if columns else np.zeros((3 * n, 0))
    return SymmetryConstraints(f"{dataset.international} ({dataset.number})", strain_basis, position_basis, orbits)
