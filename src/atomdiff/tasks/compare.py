"""Compare a measured powder pattern with the pattern simulated for a structure.

The simulated pattern is put on the measured grid and only a scale and a flat background are fitted
(weighted linear least squares, weights 1/σ² or 1/counts), so the agreement reflects the structure and the
stated instrument settings, not a refinement.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.errors import InputError
from atomdiff.physics import agreement
from atomdiff.physics.diffraction import PowderDiffractionModel, peak_table
from atomdiff.structure.structure import Structure
from atomdiff.tasks.simulate import simulate


@dataclasses.dataclass
class Comparison:
    y_calc: np.ndarray
    scale: float
    background: float
    rwp: float
    rp: float
    chi2: float
    cosine: float
    ticks: list[float]

    def metrics(self) -> dict[str, float]:
        return {
            "rwp": self.rwp,
            "rp": self.rp,
            "chi2": self.chi2,
            "cosine": self.cosine,
            "scale": self.scale,
            "background": self.background,
        }


def compare_pattern(measured: MeasuredPattern, structure: Structure, model: PowderDiffractionModel) -> Comparison:
    """Fit scale and flat background of ``model``'s pattern of ``structure`` to ``measured``."""
    if measured.axis != model.axis:
        raise InputError(f"pattern axis is {measured.axis!r} but the model's is {model.axis!r}", path=measured.source)
    shape = simulate(model, structure).y[0].numpy()
    if not np.any(shape > 0):
        raise InputError("the structure has no reflection inside the measured range", path=measured.source)
    y = measured.y
    sigma = measured.sigma
    w = 1.0 / np.maximum(sigma, 1e-12) ** 2 if sigma is not None else 1.0 / np.maximum(y, 1.0)
    design = np.stack([shape, np.ones_like(shape)], axis=1)
    sw = np.sqrt(w)
    (scale, background), *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    y_calc = scale * shape + background
    t_obs, t_calc, t_w = (torch.as_tensor(a) for a in (y, y_calc, w))
    tick_rows = peak_table(model, structure)
    ticks = [r["two_theta"] + model.zero_shift for r in tick_rows]
    if model.axis == "q":
        lam = model.wavelength.primary
        ticks = [4 * np.pi * np.sin(np.radians(t / 2)) / lam for t in ticks]
    return Comparison(
        y_calc=y_calc,
        scale=float(scale),
        background=float(background),
        rwp=float(agreement.rwp(t_obs, t_calc, t_w)),
        rp=float(agreement.rp(t_obs, t_calc)),
        chi2=float(agreement.chi2(t_obs, t_calc, t_w, n_params=2)),
        cosine=float(agreement.cosine_similarity(t_obs, t_calc)),
        ticks=ticks,
    )
