"""Periodic neighbour lists.

Pairs are found by vesin (a maintained, linear-scaling cell-list library that handles cutoffs larger than
the cell and skewed cells); the pair vectors are then recomputed in torch from ``frac`` and ``cell`` so that
they are differentiable with respect to both.
"""

from __future__ import annotations

import dataclasses

import torch
from vesin_torch import NeighborList

from atomdiff.structure.batch import StructureBatch


@dataclasses.dataclass
class Neighbors:
    """Directed pairs ``i -> j`` (full list: each pair appears in both directions) within a cutoff.

    Attributes:
        i, j: ``(n_pairs,)`` global atom indices into the batch.
        shift: ``(n_pairs, 3)`` integer lattice translation; the neighbour sits at ``frac[j] + shift``.
        batch_idx: ``(n_pairs,)`` structure of each pair.
    """

    i: torch.Tensor
    j: torch.Tensor
    shift: torch.Tensor
    batch_idx: torch.Tensor

    def vectors(self, batch: StructureBatch) -> torch.Tensor:
        """``(n_pairs, 3)`` Cartesian vectors from atom i to its neighbour j, in Å (differentiable)."""
        dfrac = batch.frac[self.j] - batch.frac[self.i] + self.shift.to(batch.frac.dtype)
        return torch.einsum("pi,pij->pj", dfrac, batch.cell[self.batch_idx])

    def distances(self, batch: StructureBatch) -> torch.Tensor:
        return torch.linalg.norm(self.vectors(batch), dim=-1)


def neighbor_list(batch: StructureBatch, cutoff: float, *, self_images: bool = True) -> Neighbors:
    """All pairs closer than ``cutoff`` (Å) in every structure of ``batch``.

    ``self_images`` keeps pairs of an atom with its own periodic images (needed when the cutoff exceeds a
    lattice vector).
    """
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    cart = batch.cart.detach().to(torch.float64).cpu()
    cells = batch.cell.detach().to(torch.float64).cpu()
    counts = batch.n_atoms.cpu().tolist()
    out_i, out_j, out_s, out_b = [], [], [], []
    start = 0
    for b, n in enumerate(counts):
        points = cart[start : start + n]
        i, j, s = calculator.compute(points, cells[b], batch.pbc[b].cpu(), quantities="ijS")
        if not self_images:
            keep = i != j
            i, j, s = i[keep], j[keep], s[keep]
        out_i.append(i.to(torch.long) + start)
        out_j.append(j.to(torch.long) + start)
        out_s.append(s.to(torch.long))
        out_b.append(torch.full((i.shape[0],), b, dtype=torch.long))
        start += n
    device = batch.frac.device
    return Neighbors(
        torch.cat(out_i).to(device),
        torch.cat(out_j).to(device),
        torch.cat(out_s).to(device),
        torch.cat(out_b).to(device),
    )


def all_pairs(batch_idx: torch.Tensor, n_structures: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(i, j)`` of atoms in the same structure, self-pairs included.

    ``batch_idx`` must be sorted (atoms of each structure contiguous), as in :class:`StructureBatch`.
    Returns ``(i, j)``, each ``(Σ n_b²,)``.
    """
    counts = torch.bincount(batch_idx, minlength=n_structures or 0)
    offsets = torch.cumsum(counts, 0) - counts
    per_atom = counts[batch_idx]
    i = torch.repeat_interleave(torch.arange(batch_idx.shape[0], device=batch_idx.device), per_atom)
    start = torch.cumsum(per_atom, 0) - per_atom
    j = offsets[batch_idx[i]] + torch.arange(i.shape[0], device=batch_idx.device) - start[i]
    return i, j
