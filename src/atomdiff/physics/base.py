"""The common interface of forward models (structure → what is measured)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from atomdiff.structure.batch import StructureBatch


def value_of(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's value as a NumPy array, also inside ``torch.func`` transforms (``jvp``, ``vmap``), where
    ``.detach()`` returns a wrapper whose data cannot be read. For what a forward model decides from values
    alone (which reflections exist, which peaks coincide), so that its Jacobian can be taken by
    ``torch.func``. Uses functorch's private unwrapping (PyTorch is pinned; tested)."""
    from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

    out = tensor.detach()
    while is_functorch_wrapped_tensor(out):
        out = get_unwrapped(out)
    with torch._C._DisableFuncTorch():
        return out.cpu().numpy().copy()


#: axis names used by :class:`Pattern`: 2θ in degrees, Q in Å⁻¹, r in Å, energy in eV
AXES = ("two_theta", "q", "r", "energy")


@dataclasses.dataclass
class Pattern:
    """Batched 1D data on a common grid.

    Attributes:
        x: ``(n_points,)`` grid (see ``axis`` for the unit).
        y: ``(n_structures, n_points)`` values.
        axis: one of :data:`AXES`.
        quantity: what ``y`` is (``"intensity"``, ``"S(Q)"``, ``"F(Q)"``, ``"G(r)"``, ``"g(r)"``, ...).
    """

    x: torch.Tensor
    y: torch.Tensor
    axis: str = "two_theta"
    quantity: str = "intensity"

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {self.axis!r}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> Pattern:
        return Pattern(
            self.x, self.y[index : index + 1] if index >= 0 else self.y[index:][:1], self.axis, self.quantity
        )


class ForwardModel(nn.Module):
    """A differentiable map from a :class:`StructureBatch` to a :class:`Pattern`.

    Subclasses hold only settings (instrument, radiation, grid); they keep no state between calls, so the
    same model can drive guidance during sampling and refinement afterwards.
    """

    def forward(self, batch: StructureBatch) -> Pattern:  # pragma: no cover - interface
        raise NotImplementedError
