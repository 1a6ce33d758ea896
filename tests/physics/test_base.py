"""The forward models' shared helpers."""

import numpy as np
import torch
from torch.func import jvp, vmap

from atomdiff.physics.base import value_of


def test_value_of_reads_values_inside_torch_func_transforms():
    """Inside vmap(jvp(...)) a tensor's data cannot be read through ``.detach()``; value_of gives the primal
    values as NumPy, so a forward model can take data-dependent decisions there (which reflections exist)."""
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    seen = []

    def f(a):
        y = a * a
        seen.append(value_of(y))
        return y

    tangents = torch.eye(3, dtype=torch.float64)
    columns = vmap(lambda t: jvp(f, (x,), (t,))[1])(tangents)
    assert np.array_equal(seen[0], np.array([1.0, 4.0, 9.0]))
    assert torch.allclose(columns, torch.diag(2 * x))
    assert np.array_equal(value_of(x.requires_grad_()), x.detach().numpy())
