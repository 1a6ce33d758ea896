"""Many structures of different sizes as concatenated torch tensors, for networks and forward models."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from atomdiff.structure.structure import Structure


@dataclasses.dataclass
class StructureBatch:
    """A batch of periodic structures.

    Per-atom tensors are concatenated over the batch; per-structure tensors are stacked.

    Attributes:
        numbers: ``(n_atoms_total,)`` long, atomic numbers.
        frac: ``(n_atoms_total, 3)`` fractional coordinates.
        cell: ``(n_structures, 3, 3)`` lattice vectors as rows, Å.
        batch_idx: ``(n_atoms_total,)`` long, which structure each atom belongs to.
        pbc: ``(n_structures, 3)`` bool.
    """

    numbers: torch.Tensor
    frac: torch.Tensor
    cell: torch.Tensor
    batch_idx: torch.Tensor
    pbc: torch.Tensor

    PER_ATOM = ("numbers", "frac", "batch_idx")
    PER_STRUCTURE = ("cell", "pbc")

    @classmethod
    def from_structures(
        cls,
        structures: Sequence[Structure],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> StructureBatch:
        if len(structures) == 0:
            raise ValueError("cannot batch zero structures")
        counts = [len(s) for s in structures]
        numbers = torch.as_tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long, device=device)
        frac = torch.as_tensor(np.concatenate([s.frac for s in structures]), dtype=dtype, device=device)
        cell = torch.as_tensor(np.stack([s.cell for s in structures]), dtype=dtype, device=device)
        batch_idx = torch.repeat_interleave(
            torch.arange(len(structures), device=device), torch.as_tensor(counts, device=device)
        )
        pbc = torch.as_tensor(np.array([s.pbc for s in structures]), dtype=torch.bool, device=device)
        return cls(numbers, frac, cell, batch_idx, pbc)

    def __len__(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_structures(self) -> int:
        return len(self)

    @property
    def n_atoms(self) -> torch.Tensor:
        """``(n_structures,)`` number of atoms of each structure."""
        return torch.bincount(self.batch_idx, minlength=len(self))

    @property
    def cart(self) -> torch.Tensor:
        """``(n_atoms_total, 3)`` Cartesian positions in Å."""
        return torch.einsum("ni,nij->nj", self.frac, self.cell[self.batch_idx])

    @property
    def volume(self) -> torch.Tensor:
        """``(n_structures,)`` cell volumes in Å³."""
        return torch.linalg.det(self.cell).abs()

    def replace(self, **changes: torch.Tensor) -> StructureBatch:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StructureBatch:
        return StructureBatch(
            self.numbers.to(device),
            self.frac.to(device=device, dtype=dtype),
            self.cell.to(device=device, dtype=dtype),
            self.batch_idx.to(device),
            self.pbc.to(device),
        )

    def dense_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot of each atom in a padded ``(n_structures, max_atoms)`` layout, and that layout's mask.

        Returns ``(slot, mask)``: ``slot`` is ``(n_atoms_total,)`` and ``mask`` is ``(n_structures, max_atoms)``.
        """
        counts = self.n_atoms
        offsets = torch.cumsum(counts, 0) - counts
        slot = torch.arange(self.batch_idx.shape[0], device=self.batch_idx.device) - offsets[self.batch_idx]
        max_atoms = int(counts.max()) if len(counts) else 0
        mask = torch.arange(max_atoms, device=counts.device)[None, :] < counts[:, None]
        return slot, mask

    def to_dense(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Scatter a per-atom tensor ``(n_atoms_total, ...)`` into ``(n_structures, max_atoms, ...)``."""
        slot, mask = self.dense_index()
        out = values.new_full((len(self), mask.shape[1], *values.shape[1:]), fill)
        out[self.batch_idx, slot] = values
        return out

    def to_structures(self) -> list[Structure]:
        numbers = self.numbers.detach().cpu().numpy()
        frac = self.frac.detach().cpu().double().numpy()
        cell = self.cell.detach().cpu().double().numpy()
        pbc = self.pbc.cpu().numpy()
        idx = self.batch_idx.cpu().numpy()
        return [
            Structure(numbers[idx == b], frac[idx == b], cell[b], tuple(bool(p) for p in pbc[b]))
            for b in range(len(self))
        ]
