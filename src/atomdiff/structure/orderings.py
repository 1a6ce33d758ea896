"""Other orderings of a structure's species over the same sites: the symmetry-distinct ways to distribute the
atoms of a group of species (Cu and Zn, say) over the sites those atoms occupy, every other atom and the cell
unchanged.

Used where the data hardly tell the species of a group apart (X-ray scattering powers of Cu and Zn differ by one
electron in thirty): kesterite and stannite Cu2ZnSnS4 are the same sites with Cu and Zn ordered differently, and a
generated candidate carries whichever ordering its sample happened to have.

Two orderings are the same structure when a symmetry operation of the *parent* (the structure with the group's
species made one species) maps one onto the other; the orderings are enumerated, reduced to one per orbit of the
parent's operations (as permutations of the sites), and returned closest first (fewest atoms changed). This is
the textbook enumeration of derivative structures restricted to the given sites and cell (no supercells), small
enough to write here: the maintained enumerators (enumlib behind pymatgen's ``EnumerateStructureTransformation``)
are compiled programs that enumerate supercells of a disordered parent, which is not the question here.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from atomdiff.errors import InputError
from atomdiff.structure.structure import Structure

MAX_ENUMERATED = 20_000
"""More assignments than this: only those one exchange of two unlike atoms away from the original are tried."""


def site_permutations(structure: Structure, symprec: float = 0.1) -> np.ndarray:
    """``(n_ops, n_atoms)``: the symmetry operations spglib finds within ``symprec`` (Å), each as the permutation
    ``p`` that sends atom ``i`` to the site of atom ``p[i]`` (operations that do not map atoms onto atoms of the same
    species within ``2 symprec`` are left out; the identity is always there)."""
    import spglib

    frac = np.asarray(structure.frac, dtype=float) % 1.0
    numbers = np.asarray(structure.numbers)
    n = len(numbers)
    identity = np.arange(n)[None]
    found = spglib.get_symmetry((np.asarray(structure.cell), frac, numbers), symprec=symprec)
    if not found:
        return identity
    cell = np.asarray(structure.cell, dtype=float)
    perms = [identity[0]]
    for rot, trans in zip(found["rotations"], found["translations"], strict=True):
        image = frac @ np.asarray(rot, dtype=float).T + trans
        d = image[:, None, :] - frac[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=-1)
        dist[numbers[:, None] != numbers[None, :]] = np.inf
        p = dist.argmin(1)
        if dist[np.arange(n), p].max() <= 2 * symprec and len(set(p.tolist())) == n:
            perms.append(p)
    return np.unique(np.asarray(perms), axis=0)


def multiset_permutations(items: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every distinct arrangement of the multiset ``items``, in lexicographic order, without generating
    duplicates."""
    counts = Counter(items)
    keys = sorted(counts)
    n = len(items)
    out: list[int] = []

    def rec() -> Iterator[tuple[int, ...]]:
        if len(out) == n:
            yield tuple(out)
            return
        for k in keys:
            if counts[k]:
                counts[k] -= 1
                out.append(k)
                yield from rec()
                out.pop()
                counts[k] += 1

    yield from rec()


def _count(species: Sequence[int]) -> int:
    counts = Counter(species)
    return math.factorial(len(species)) // math.prod(math.factorial(c) for c in counts.values())


def species_orderings(
    structure: Structure, groups: Sequence[Sequence[int]], limit: int = 8, symprec: float = 0.1
) -> list[Structure]:
    """Up to ``limit`` symmetry-distinct orderings of ``structure`` other than its own, each a copy with the
    species of each group (atomic numbers) redistributed over the sites they occupy; fewest changed atoms first
    (ties in enumeration order). Groups with fewer than two of their species present change nothing; none of
    them present or none with two species: an empty list.

    All arrangements are enumerated when there are at most :data:`MAX_ENUMERATED` (the product over groups),
    otherwise only those that exchange two unlike atoms of one group. Symmetry (:func:`site_permutations` of
    the parent, in which each group is one species) is found within ``symprec`` Å."""
    if limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    numbers = np.asarray(structure.numbers)
    seen_z: set[int] = set()
    active: list[np.ndarray] = []  # site indices of each group with two or more of its species present
    blind = numbers.copy()
    for group in groups:
        group = [int(z) for z in group]
        if len(set(group)) != len(group) or seen_z & set(group):
            raise InputError(f"species groups must not repeat an element, got {[list(g) for g in groups]}")
        seen_z |= set(group)
        sites = np.flatnonzero(np.isin(numbers, group))
        if len(set(numbers[sites].tolist())) >= 2:
            active.append(sites)
            blind[sites] = group[0]
    if not active:
        return []
    perms = site_permutations(structure.replace(numbers=blind), symprec)

    def canonical(values: np.ndarray) -> bytes:
        return min(values[p].tobytes() for p in perms)

    per_group = [numbers[sites] for sites in active]
    total = math.prod(_count(s.tolist()) for s in per_group)
    if total <= MAX_ENUMERATED:
        options = itertools.product(*(list(multiset_permutations(s.tolist())) for s in per_group))
        trials = (np.concatenate([np.asarray(a) for a in combo]) for combo in options)
    else:
        trials = _single_exchanges(per_group)
    all_sites = np.concatenate(active)
    original = numbers[all_sites]
    found: dict[bytes, np.ndarray] = {canonical(numbers): original}
    for values in trials:
        full = numbers.copy()
        full[all_sites] = values
        key = canonical(full)
        if key not in found:
            found[key] = values
    others = list(found.values())[1:]
    others.sort(key=lambda v: int((v != original).sum()))  # stable: enumeration order within a tie
    out = []
    for values in others[:limit]:
        full = numbers.copy()
        full[all_sites] = values
        out.append(structure.replace(numbers=full))
    return out


def _single_exchanges(per_group: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """The arrangements one exchange of two unlike atoms of one group away from the original (concatenated)."""
    original = np.concatenate(per_group)
    start = 0
    for species in per_group:
        for i, j in itertools.combinations(range(len(species)), 2):
            if species[i] != species[j]:
                values = original.copy()
                values[start + i], values[start + j] = species[j], species[i]
                yield values
        start += len(species)
