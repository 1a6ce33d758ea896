"""Structure → XANES surrogate: the spectrum of every absorbing atom from its local environment.

A :class:`~atomdiff.models.local.LocalEquivariantNet` with an invariant head of ``n_bins`` outputs per atom,
in units of the per-bin mean and standard deviation of the training spectra. The structure's spectrum is the
mean over absorbing atoms. It is differentiable with respect to positions and cell, so it serves as the forward
model of XANES guidance; evaluated on a structure batch, it is invariant to rotations, translations and
permutations by construction of the network.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torch import nn

from atomdiff.errors import InputError
from atomdiff.models.local import Graph, LocalEquivariantNet, LocalNetConfig
from atomdiff.models.persistence import load_module, save_module
from atomdiff.structure.batch import StructureBatch

KIND = "xanes_surrogate"


@dataclasses.dataclass
class LabelledBatch:
    """Structures with the spectra of their absorbing atoms.

    Attributes:
        batch: the structures.
        absorbers: ``(k,)`` global indices of the labelled atoms.
        spectra: ``(k, n_bins)``.
    """

    batch: StructureBatch
    absorbers: torch.Tensor
    spectra: torch.Tensor

    def __len__(self) -> int:
        return len(self.batch)


class XanesSurrogate(nn.Module):
    """Per-atom spectra of the absorbing element.

    Args:
        net: network shape (its conditioning and output fields are set here).
        n_bins: points of the spectrum.
        absorber: atomic number of the absorbing element.
        mean, std: per-bin statistics of the training spectra (outputs are ``mean + std · network``).
        energies: the energy (eV) of each bin when known, else ``None`` (bins are then indices).
        edge: absorption edge (``K``, ``L3`` ...).
    """

    def __init__(
        self,
        net: LocalNetConfig | None,
        n_bins: int,
        absorber: int = 6,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        energies: list[float] | None = None,
        edge: str = "K",
    ):
        super().__init__()
        base = net or LocalNetConfig(cutoff=3.5)
        self.net_config = dataclasses.replace(base, n_cond=0, out_scalars=int(n_bins), out_vector=False)
        self.net = LocalEquivariantNet(self.net_config)
        self.n_bins = int(n_bins)
        self.absorber = int(absorber)
        self.edge = edge
        self.energies = list(energies) if energies is not None else None
        self.register_buffer("mean", torch.as_tensor(mean if mean is not None else [0.0] * n_bins).float())
        self.register_buffer("std", torch.as_tensor(std if std is not None else [1.0] * n_bins).float())
        if self.mean.shape != (n_bins,) or self.std.shape != (n_bins,):
            raise InputError(f"mean and std need {n_bins} values")

    def _normalised(self, batch: StructureBatch) -> torch.Tensor:
        cart = batch.cart
        graph = Graph.build(batch, cart, self.net_config.cutoff)
        _, out = self.net(batch.numbers, cart, graph, batch.batch_idx)
        return out

    def per_atom(self, batch: StructureBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(absorbers (k,), spectra (k, n_bins))`` of every atom of the absorbing element."""
        absorbers = torch.nonzero(batch.numbers == self.absorber).squeeze(-1)
        out = self._normalised(batch)[absorbers]
        return absorbers, self.mean.to(out.dtype) + self.std.to(out.dtype) * out

    def forward(self, batch: StructureBatch) -> torch.Tensor:
        """``(n_structures, n_bins)`` mean spectrum over the absorbing atoms of each structure."""
        absorbers, spectra = self.per_atom(batch)
        b = batch.batch_idx[absorbers]
        count = torch.bincount(b, minlength=len(batch))
        if bool((count == 0).any()):
            missing = int(torch.nonzero(count == 0)[0])
            raise InputError(f"structure {missing} has no absorbing atom (Z = {self.absorber})")
        total = spectra.new_zeros((len(batch), self.n_bins)).index_add(0, b, spectra)
        return total / count.unsqueeze(-1).to(spectra.dtype)

    def match_area(self, spectrum: np.ndarray | torch.Tensor) -> np.ndarray:
        """``spectrum`` rescaled to the area of the mean training spectrum.

        Measured and computed XANES come in arbitrary units (the a-C data set's crystalline references are ~48×
        smaller than its a-C spectra); guidance compares shapes only after putting the target on the scale the
        surrogate predicts.
        """
        y = np.asarray(spectrum, dtype=np.float64)
        area = float(y.sum())
        if not np.isfinite(area) or area <= 0:
            raise InputError("a XANES target must have a positive area to be rescaled (use no rescaling)")
        return y * (float(self.mean.sum()) / area)

    def loss(self, labelled: LabelledBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mean squared error per bin in units of the training standard deviation, and in absolute units."""
        out = self._normalised(labelled.batch)[labelled.absorbers]
        std = self.std.to(out.dtype)
        target = (labelled.spectra.to(out.dtype) - self.mean.to(out.dtype)) / std
        loss = ((out - target) ** 2).mean()
        mse = (((out - target) * std) ** 2).mean()
        return {"loss": loss, "mse": mse.detach()}

    # --- persistence ---------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "kind": KIND,
            "net": self.net_config.to_dict(),
            "n_bins": self.n_bins,
            "absorber": self.absorber,
            "edge": self.edge,
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
            "energies": self.energies,
        }

    @classmethod
    def from_config(cls, config: dict) -> XanesSurrogate:
        if config.get("kind") != KIND:
            raise InputError(f"not a XANES surrogate (kind {config.get('kind')!r})")
        return cls(
            LocalNetConfig(**config["net"]),
            config["n_bins"],
            config["absorber"],
            config["mean"],
            config["std"],
            config.get("energies"),
            config.get("edge", "K"),
        )

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        save_module(self, self.config_dict(), directory, extra)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> XanesSurrogate:
        return load_module(cls, directory)
