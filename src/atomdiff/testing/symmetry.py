"""Symmetries of a periodic structure and a numerical check that a function respects them.

Each transform maps a :class:`Structure` to an equivalent description of the same crystal and records how
per-atom outputs must follow (the permutation) and how vectors rotate (the orthogonal matrix), so one helper
checks invariance and equivariance alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from atomdiff.structure.structure import Structure


@dataclasses.dataclass
class Transform:
    """A symmetry operation applied to a structure.

    Attributes:
        name: for messages.
        structure: the transformed structure.
        perm: new atom k is old atom ``perm[k]``.
        rotation: ``(3, 3)`` orthogonal matrix applied to Cartesian vectors (row vectors: ``v @ rotation.T``).
        basis: ``(3, 3)`` integer matrix M with new cell = M @ old cell (fractional vectors map by M⁻ᵀ).
    """

    name: str
    structure: Structure
    perm: np.ndarray
    rotation: np.ndarray
    basis: np.ndarray


def random_orthogonal(rng: np.random.Generator, reflection: bool = True) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if not reflection and np.linalg.det(q) < 0:
        q[:, 0] *= -1
    if reflection and np.linalg.det(q) > 0:
        q[:, 0] *= -1
    return q


def random_unimodular(rng: np.random.Generator) -> np.ndarray:
    """An integer matrix with determinant ±1 (a change of cell basis), not the identity."""
    while True:
        m = np.eye(3, dtype=np.int64)
        for _ in range(3):
            a, b = rng.choice(3, size=2, replace=False)
            m[a] += rng.choice([-1, 1]) * m[b]
        if abs(round(np.linalg.det(m))) == 1 and not np.array_equal(m, np.eye(3)):
            return m


def _identity(s: Structure, name: str, structure: Structure, **kw) -> Transform:
    base = {"perm": np.arange(len(s)), "rotation": np.eye(3), "basis": np.eye(3, dtype=np.int64)}
    base.update(kw)
    return Transform(name, structure, **base)


def rotate(s: Structure, rng: np.random.Generator) -> Transform:
    q = random_orthogonal(rng)
    return _identity(s, "rotation+reflection", s.replace(cell=s.cell @ q.T), rotation=q)


def shift(s: Structure, rng: np.random.Generator) -> Transform:
    """Rigid translation by a random fractional vector, wrapped back into [0, 1)."""
    return _identity(s, "translation (wrapped)", s.replace(frac=np.mod(s.frac + rng.random(3), 1.0)))


def permute(s: Structure, rng: np.random.Generator) -> Transform:
    perm = rng.permutation(len(s))
    return _identity(s, "permutation", s.replace(numbers=s.numbers[perm], frac=s.frac[perm]), perm=perm)


def change_basis(s: Structure, rng: np.random.Generator) -> Transform:
    m = random_unimodular(rng)
    new = s.replace(cell=m @ s.cell, frac=s.frac @ np.linalg.inv(m))
    return _identity(s, "unimodular change of basis", new, basis=m)


ALL = (rotate, shift, permute)


def assert_symmetric(
    fn: Callable[[Structure], dict[str, np.ndarray]],
    structure: Structure,
    kinds: dict[str, str],
    transforms: Sequence[Callable[[Structure, np.random.Generator], Transform]] = ALL,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Check that ``fn``'s outputs follow each transform of ``structure``.

    ``fn`` returns named arrays; ``kinds`` says how each transforms: ``"invariant"`` (unchanged),
    ``"atom_invariant"`` (per atom, permuted with the atoms), ``"atom_vector"`` (per-atom Cartesian vectors:
    permuted and rotated) or ``"atom_frac"`` (per-atom fractional displacements: permuted, and mapped by
    ``δf M⁻¹`` under a change of basis). Tolerances default to the output dtype (1e-9 float64, 1e-4 float32).
    """
    rng = np.random.default_rng(seed)
    ref = fn(structure)
    for make in transforms:
        tr = make(structure, rng)
        out = fn(tr.structure)
        for key, kind in kinds.items():
            a, b = np.asarray(ref[key]), np.asarray(out[key])
            if kind in ("atom_invariant", "atom_vector", "atom_frac"):
                a = a[tr.perm]
            if kind == "atom_vector":
                a = a @ tr.rotation.T
            if kind == "atom_frac":
                a = a @ np.linalg.inv(tr.basis)
            tol_r = rtol if rtol is not None else (1e-9 if b.dtype == np.float64 else 1e-4)
            tol_a = atol if atol is not None else tol_r * max(1.0, float(np.abs(a).max(initial=0.0)))
            if not np.allclose(b, a, rtol=tol_r, atol=tol_a):
                err = float(np.abs(b - a).max())
                raise AssertionError(f"{key} is not {kind} under {tr.name}: max deviation {err:.3g}")
