"""Powder indexing: the unit cell of a pattern from its peak positions alone, before any atom is placed.

Two steps, as crystallographers run them before a structure solution:

1. :func:`find_peaks` — the peak positions: local maxima standing out of the noise, the Kα2 partner of each
   Kα1 peak of a doublet recognised and dropped, each position refined by a least-squares fit of a
   pseudo-Voigt (doublet) profile over a linear local background;
2. :func:`index_peaks` — trial-and-error indexing in the spirit of ITO/TREOR: in ``q = 1/d²`` every lattice of
   the cubic, tetragonal, hexagonal, orthorhombic and monoclinic systems is linear in one to four metric
   parameters (``q = h²A + k²B + l²C`` for orthorhombic, ``q = (h²+hk+k²)A + l²C`` for hexagonal,
   ``q = h²A + k²B + l²C + hlD`` for monoclinic with unique axis b), so assigning small indices to one to four of
   the first lines gives a trial lattice by a linear solve (monoclinic: the first line gets indices up to 1,
   three of the next five up to 2; each trial's reciprocal a*c* plane is Gauss-reduced so that one lattice
   reached from many index choices is counted once; the search is skipped when a cell of higher symmetry
   already indexes every line too well for a monoclinic one to outrank it). Triclinic lattices (six
   parameters, ``q = h²A + k²B + l²C + klD + hlE + hkF``) are too many for that: they are built as ITO builds
   them (Visser, J. Appl. Cryst. 2, 89 (1969)), from plane lattices (zones) found in the lines by the relation
   ``q(hk0) + q(hk̄0) = 2(h²A + k²B)``, two zones that share a row giving five parameters and the lines' votes
   the sixth (:func:`_triclinic_trials`); searched only when no cell of higher symmetry indexes the lines well,
   and reported Niggli-reduced. Every trial is
   scored by how many of the first ``lines`` observed lines it indexes; the best are refined (metric
   parameters and zero shift by least squares on the indexed lines), their lattice centring is read from the
   indices of the lines (I, F, C, A, B, R) and they are ranked (:func:`score`) by de Wolff's figure of merit
   ``M_N`` (de Wolff, J. Appl. Cryst. 1, 108 (1968)), which prefers the smallest cell that explains the lines,
   discounted for each extra metric parameter and each unindexed line.

Written here rather than taken from a library: the maintained indexers (DICVOL, TREOR, N-TREOR, GSAS-II's, the
ObjCryst++ one in pyobjcryst) are not installable from PyPI as wheels (pyobjcryst is source-only and needs the
ObjCryst++ and Boost.Python libraries; GSAS-II is not on PyPI); ``mlindex`` needs its models downloaded from
outside PyPI. A pattern whose cell is not found gets no indexing or a wrong cell (``benchmarks/bench_index.py``
measures how often), never one with unindexed lines hidden (:attr:`IndexedCell.unindexed` says how many lines a
cell leaves out).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.profile import pseudo_voigt
from atomdiff.physics.radiation import Wavelength

SYSTEMS = ("cubic", "hexagonal", "tetragonal", "orthorhombic", "monoclinic", "triclinic")
_PARAMETERS = {"cubic": 1, "tetragonal": 2, "hexagonal": 2, "orthorhombic": 3, "monoclinic": 4, "triclinic": 6}
MIN_MERIT = 20.0
"""Default smallest figure of merit M_N of a reported solution (de Wolff: below 10–20 a cell is doubtful)."""
ZONE_LINES = 14
"""Triclinic search: rows of zones are taken from this many first lines (a short axis puts the first ten or more
lines in one zone, and the second zone's other row comes later)."""
ZONES = 60
"""Triclinic search: zones kept, those least likely to index their lines by chance first."""
VOTE_H = 4
"""Triclinic search: largest |h| (along the shared row) of the reflections that vote for the last angle."""
VOTE_WIDTH = 3.0
"""Triclinic search: votes for the last angle within ± this many median line tolerances count together."""
VOTED_D = 200
"""Triclinic search: values of the last angle tried per pair of zones, most voted first (the trials are then
counted against the lines and ranked by chance, which is cheap next to missing the true one)."""
PARAMETER_PENALTY = 3.0
UNINDEXED_PENALTY = 2.0
_CENTRINGS = {
    "cubic": ("P", "I", "F"),
    "tetragonal": ("P", "I"),
    "hexagonal": ("P", "R"),
    "orthorhombic": ("P", "C", "A", "B", "I", "F"),
    "monoclinic": ("P", "C", "A", "I"),  # unique axis b; C, A and I are settings of one lattice
    "triclinic": ("P",),  # a reduced cell: every lattice is primitive in some basis
}
# conventional → primitive basis (rows: primitive vectors in conventional fractions)
_PRIMITIVE = {
    "P": np.eye(3),
    "I": 0.5 * np.array([[-1.0, 1, 1], [1, -1, 1], [1, 1, -1]]),
    "F": 0.5 * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]]),
    "C": 0.5 * np.array([[1.0, 1, 0], [-1, 1, 0], [0, 0, 2]]),
    "A": 0.5 * np.array([[2.0, 0, 0], [0, 1, 1], [0, -1, 1]]),
    "B": 0.5 * np.array([[1.0, 0, 1], [0, 2, 0], [-1, 0, 1]]),
    "R": np.array([[2.0, 1, 1], [-1, 1, 1], [-1, -2, 1]]) / 3.0,
}


def _allowed(centring: str, hkl: np.ndarray) -> np.ndarray:
    """Reflections ``(m, 3)`` that lattice centring allows."""
    h, k, l = hkl[..., 0], hkl[..., 1], hkl[..., 2]  # noqa: E741
    if centring == "P":
        return np.ones(h.shape, dtype=bool)
    if centring == "I":
        return (h + k + l) % 2 == 0
    if centring == "F":
        return ((h + k) % 2 == 0) & ((k + l) % 2 == 0)
    if centring == "C":
        return (h + k) % 2 == 0
    if centring == "A":
        return (k + l) % 2 == 0
    if centring == "B":
        return (h + l) % 2 == 0
    if centring == "R":  # hexagonal axes, obverse setting −h+k+l = 3n, for h, k, ±l (same d in a powder)
        return ((k - h) ** 2 - l**2) % 3 == 0
    raise ValueError(centring)


def _metric_terms(system: str, hkl: np.ndarray) -> np.ndarray:
    """``(…, p)`` coefficients of the metric parameters in ``q = 1/d²`` for indices ``(…, 3)``."""
    h, k, l = (hkl[..., i].astype(float) for i in range(3))  # noqa: E741
    if system == "cubic":
        return (h * h + k * k + l * l)[..., None]
    if system == "tetragonal":
        return np.stack([h * h + k * k, l * l], -1)
    if system == "hexagonal":
        return np.stack([h * h + h * k + k * k, l * l], -1)
    if system == "orthorhombic":
        return np.stack([h * h, k * k, l * l], -1)
    if system == "monoclinic":  # unique axis b: q = h²A + k²B + l²C + hlD, D = 2 a* c* cos β*
        return np.stack([h * h, k * k, l * l, h * l], -1)
    if system == "triclinic":  # q = h²A + k²B + l²C + klD + hlE + hkF, D = 2 b*·c*, E = 2 a*·c*, F = 2 a*·b*
        return np.stack([h * h, k * k, l * l, k * l, h * l, h * k], -1)
    raise InputError(f"indexing: unknown crystal system {system!r}; known: {', '.join(SYSTEMS)}")


@functools.lru_cache(maxsize=256)
def _hkl_set(system: str, limits: tuple[int, int, int]) -> np.ndarray:
    """Indices up to ``limits`` (one per distinct metric-term vector, the first met), zero excluded."""
    ranges = [range(0, n + 1) for n in limits]
    if system == "hexagonal":
        ranges[1] = range(-limits[1], limits[1] + 1)
    if system == "monoclinic":
        ranges[0] = range(-limits[0], limits[0] + 1)
    if system == "triclinic":  # half of reciprocal space: (h, k, l) and (−h, −k, −l) are one line
        ranges[0] = range(-limits[0], limits[0] + 1)
        ranges[1] = range(-limits[1], limits[1] + 1)
    hkl = np.array([t for t in itertools.product(*ranges) if any(t)], dtype=int)
    _, first = np.unique(_metric_terms(system, hkl), axis=0, return_index=True)
    out = hkl[np.sort(first)]
    out.flags.writeable = False
    return out


@dataclasses.dataclass(frozen=True)
class Peaks:
    """Peak positions of a pattern, in increasing ``x`` (decreasing d).

    Attributes:
        x: refined positions on the pattern's axis (2θ in degrees for the primary wavelength, or Q in Å⁻¹).
        d: d-spacings (Å).
        height: peak heights above the local background.
        fwhm: widths (axis units).
        sigma_x: standard uncertainties of the positions (axis units).
        axis: ``"two_theta"`` or ``"q"``.
        wavelength: the primary wavelength (Å) used for ``d`` (2θ axis only).
    """

    x: np.ndarray
    d: np.ndarray
    height: np.ndarray
    fwhm: np.ndarray
    sigma_x: np.ndarray
    axis: str
    wavelength: float | None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _to_d(x: np.ndarray, axis: str, lam: float | None) -> np.ndarray:
    if axis == "q":
        return 2 * math.pi / x
    return lam / (2 * np.sin(np.radians(x) / 2))


def _from_q2(q2: np.ndarray, axis: str, lam: float | None) -> np.ndarray:
    """Position on the axis of ``q2 = 1/d²`` (NaN beyond the 2θ range)."""
    if axis == "q":
        return 2 * math.pi * np.sqrt(q2)
    s = lam * np.sqrt(q2) / 2
    with np.errstate(invalid="ignore"):
        return np.where(s < 1, 2 * np.degrees(np.arcsin(np.minimum(s, 1.0))), np.nan)


def _dq2_dx(x: np.ndarray, axis: str, lam: float | None) -> np.ndarray:
    """Derivative of ``q2 = 1/d²`` with respect to the axis position."""
    if axis == "q":
        return x / (2 * math.pi**2)
    theta = np.radians(x) / 2
    return 4 * np.sin(theta) * np.cos(theta) / lam**2 * (math.pi / 180.0)


def _noise(y: np.ndarray) -> float:
    """Robust noise level of a pattern from its second differences (median absolute deviation)."""
    d2 = np.diff(y, 2)
    mad = np.median(np.abs(d2 - np.median(d2)))
    return max(1.4826 * mad / math.sqrt(6.0), 1e-12)


def _background(y: np.ndarray, noise: np.ndarray, window: int) -> np.ndarray:
    """Slowly varying background: a running median over ``window`` points, recomputed with the points more than
    two standard uncertainties above the first estimate replaced by it (so peaks do not lift it)."""
    from scipy.ndimage import median_filter, uniform_filter1d

    window = min(window, (len(y) // 2) * 2 - 1)
    bg = median_filter(y, size=window, mode="nearest")
    for _ in range(2):
        clipped = np.minimum(y, bg + 2 * noise)
        bg = median_filter(clipped, size=window, mode="nearest")
    return uniform_filter1d(bg, size=max(window // 4, 1), mode="nearest")


def find_peaks(
    x: np.ndarray,
    y: np.ndarray,
    axis: str,
    wavelength: Wavelength | None = None,
    sigma: np.ndarray | None = None,
    significance: float = 5.0,
) -> Peaks:
    """Peaks of a powder pattern standing at least ``significance`` standard uncertainties above the background.

    ``sigma`` per point (default: the noise estimated from the pattern's second differences, or ``√y`` for
    counts, whichever is larger). For a doublet wavelength (``CuKa``) each Kα1 peak's Kα2 partner is
    recognised (at its position, weaker) and dropped, and the position is fitted with both lines."""
    from scipy.optimize import least_squares
    from scipy.signal import find_peaks as scipy_find_peaks
    from scipy.signal import peak_widths

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if axis not in ("two_theta", "q"):
        raise InputError(f"peaks can be indexed on a 2θ or Q axis, not {axis!r}")
    if axis == "two_theta" and wavelength is None:
        raise InputError("indexing a 2θ pattern needs its wavelength")
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 20:
        raise InputError("indexing needs a pattern of at least 20 points with one intensity per point")
    lams = wavelength.values if (axis == "two_theta" and wavelength is not None) else (1.0,)
    ratios = wavelength.weights if (axis == "two_theta" and wavelength is not None) else (1.0,)
    lam = lams[0] if axis == "two_theta" else None
    if sigma is None:
        noise = np.full_like(y, _noise(y))
        if np.all(y >= 0) and np.allclose(y, np.round(y)):
            noise = np.maximum(noise, np.sqrt(np.maximum(y, 1.0)))
    else:
        noise = np.maximum(np.asarray(sigma, dtype=float), 1e-12)
    step = float(np.median(np.diff(x)))

    background = _background(y, noise, max(101, int(round(3.0 / max(step, 1e-9))) | 1))
    # detect on a lightly smoothed curve ([1, 2, 1] / 4: noise × 0.61): a maximum of the raw noise measured
    # against the lowest noise point beside it passes a prominence test far too often
    smooth = np.convolve(np.pad(y, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    sigma_s = 0.612 * noise
    signal = smooth - background
    idx, props = scipy_find_peaks(signal, height=significance * sigma_s, prominence=0.5 * significance * sigma_s)
    if idx.size == 0:
        return Peaks(*(np.zeros(0) for _ in range(5)), axis=axis, wavelength=lam)
    widths = peak_widths(smooth, idx, rel_height=0.5)[0] * step
    widths = np.maximum(widths, 1.5 * step)
    heights = signal[idx]

    def partner(pos: np.ndarray, lam2: float) -> np.ndarray:
        if axis == "q":
            return pos
        s = np.sin(np.radians(pos) / 2) * lam2 / lam
        return np.where(s < 1, 2 * np.degrees(np.arcsin(np.minimum(s, 1.0))), np.inf)

    # drop the Kα2 partners of stronger peaks
    main = np.ones(idx.size, dtype=bool)
    if len(lams) > 1:
        order = np.argsort(-heights)
        for i in order:
            if not main[i]:
                continue
            for lam2, r in zip(lams[1:], ratios[1:], strict=True):
                at = partner(x[idx[i]], lam2)
                near = np.abs(x[idx] - at) <= np.maximum(0.5 * widths[i], 1.5 * step)
                near &= heights <= max(1.5 * r, 0.8) * heights[i]
                near[i] = False
                main &= ~near
    idx, widths, heights = idx[main], widths[main], heights[main]

    pos_out, sig_out, fwhm_out, height_out = [], [], [], []
    for j, i in enumerate(idx):
        x0, w0 = x[i], widths[j]
        lo = x0 - 2.0 * w0
        hi = max([x0 + 2.0 * w0, *(float(partner(np.array(x0), lam2)) + 1.5 * w0 for lam2 in lams[1:])])
        if j > 0:
            lo = max(lo, 0.5 * (x[idx[j - 1]] + x0))
        if j + 1 < idx.size:
            hi = min(hi, 0.5 * (x[idx[j + 1]] + x0)) if x[idx[j + 1]] - x0 > w0 else hi
        sel = (x >= lo) & (x <= hi)
        if sel.sum() < 5:
            sel = np.abs(x - x0) <= 3 * step
        xs, ys, ss = x[sel], y[sel], noise[sel]

        def model(p: np.ndarray, xs: np.ndarray = xs, x0: float = x0) -> np.ndarray:
            centre, area, width, b0, b1 = p
            out = b0 + b1 * (xs - x0)
            for lam2, r in zip(lams, ratios, strict=True):
                c = partner(np.array(centre), lam2) if lam2 != lams[0] else centre
                out = out + r * area * pseudo_voigt(torch.from_numpy(xs - c), width, 0.5).numpy()
            return out

        b0 = float(min(ys[0], ys[-1]))
        area0 = max(float(y[i] - b0), 1e-9) * w0
        p0 = np.array([x0, area0, w0, b0, 0.0])
        lower = [x0 - w0, 0.0, 0.3 * step, -np.inf, -np.inf]
        upper = [x0 + w0, np.inf, 5 * w0, np.inf, np.inf]
        try:
            fit = least_squares(lambda p, ys=ys, ss=ss: (model(p) - ys) / ss, p0, bounds=(lower, upper), x_scale="jac")
            jac = fit.jac
            dof = max(len(xs) - 5, 1)
            s2 = float(np.sum(fit.fun**2)) / dof
            cov = np.linalg.pinv(jac.T @ jac) * max(s2, 1.0)
            pos, sig, wid = float(fit.x[0]), float(math.sqrt(max(cov[0, 0], 0.0))), float(fit.x[2])
        except (ValueError, np.linalg.LinAlgError):
            pos, sig, wid = float(x0), step, float(w0)
        pos_out.append(pos)
        sig_out.append(max(sig, 0.05 * step))
        fwhm_out.append(wid)
        height_out.append(float(heights[j]))
    xs_, fw, sg = np.array(pos_out), np.array(fwhm_out), np.array(sig_out)
    # noise maxima fit to widths far from the pattern's (one or two points, or a broad bump) and to loose positions
    typical = float(np.median(fw[np.argsort(-np.array(height_out))[:10]]))  # of the strongest peaks
    real = (fw >= 0.5 * typical) & (fw <= 4.0 * typical) & (sg <= 0.25 * fw)
    xs_, fw, sg = xs_[real], fw[real], sg[real]
    height_out = list(np.array(height_out)[real])
    # two maxima of one peak (a shoulder, a partly resolved doublet) can fit to the same position: keep the taller
    order = np.argsort(-np.array(height_out))
    keep: list[int] = []
    for i in order:
        if all(abs(xs_[i] - xs_[j]) > max(0.5 * max(fw[i], fw[j]), 1.5 * step) for j in keep):
            keep.append(i)
    keep.sort()
    xs_, fw, sg = xs_[keep], fw[keep], sg[keep]
    height_out = list(np.array(height_out)[keep])
    order = np.argsort(xs_)
    xs_ = xs_[order]
    return Peaks(
        x=xs_,
        d=_to_d(xs_, axis, lam),
        height=np.array(height_out)[order],
        fwhm=fw[order],
        sigma_x=sg[order],
        axis=axis,
        wavelength=lam,
    )


@dataclasses.dataclass(frozen=True)
class IndexedCell:
    """One indexing solution (conventional cell of its system and centring).

    Attributes:
        system: ``"cubic"``, ``"tetragonal"``, ``"hexagonal"``, ``"orthorhombic"``, ``"monoclinic"`` (unique
            axis b, β ≥ 90°) or ``"triclinic"`` (a Niggli-reduced cell).
        centring: ``"P"``, ``"I"``, ``"F"``, ``"C"``, ``"A"``, ``"B"`` or ``"R"`` (hexagonal axes).
        lengths: conventional ``a, b, c`` (Å).
        angles: conventional ``α, β, γ`` (degrees).
        zero_shift: refined zero shift (axis units; ``x_observed = x_calculated + zero_shift``).
        m_n: de Wolff's figure of merit over the first ``lines`` observed lines.
        lines: how many observed lines the figure of merit was computed over.
        unindexed: how many of them the cell does not index.
        hkl: ``(lines, 3)`` indices given to those lines (``-1, -1, -1`` where unindexed).
    """

    system: str
    centring: str
    lengths: tuple[float, float, float]
    angles: tuple[float, float, float]
    zero_shift: float
    m_n: float
    lines: int
    unindexed: int
    hkl: np.ndarray

    @property
    def conventional(self) -> np.ndarray:
        """``(3, 3)`` conventional cell, rows the lattice vectors (c along z, a along x)."""
        a, b, c = self.lengths
        if self.system == "hexagonal":
            return np.array([[a, 0.0, 0.0], [-a / 2, a * math.sqrt(3) / 2, 0.0], [0.0, 0.0, c]])
        if self.system == "monoclinic":  # b along y, c in the xz plane
            beta = math.radians(self.angles[1])
            return np.array([[a, 0.0, 0.0], [0.0, b, 0.0], [c * math.cos(beta), 0.0, c * math.sin(beta)]])
        if self.system == "triclinic":
            from pymatgen.core import Lattice

            return np.array(Lattice.from_parameters(*self.lengths, *self.angles).matrix)
        return np.diag([a, b, c])

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.conventional)))

    @property
    def primitive(self) -> np.ndarray:
        """``(3, 3)`` primitive cell of the centred lattice (Niggli-reduced), rows the lattice vectors."""
        from pymatgen.core import Lattice

        cell = _PRIMITIVE[self.centring] @ self.conventional
        return np.array(Lattice(cell).get_niggli_reduced_lattice().matrix)

    def describe(self) -> str:
        a, b, c = self.lengths
        if self.system == "cubic":
            shape = f"a = {a:.5f} Å"
        elif self.system in ("tetragonal", "hexagonal"):
            shape = f"a = {a:.5f}, c = {c:.5f} Å"
        else:
            shape = f"a, b, c = {a:.5f}, {b:.5f}, {c:.5f} Å"
        if self.system == "monoclinic":
            shape += f", β = {self.angles[1]:.3f}°"
        if self.system == "triclinic":
            shape += ", α, β, γ = {:.3f}, {:.3f}, {:.3f}°".format(*self.angles)
        return (
            f"{self.system} {self.centring}, {shape}, V = {self.volume:.2f} Å³, M{self.lines} = {self.m_n:.1f}, "
            f"{self.unindexed} of {self.lines} lines unindexed"
        )


def _triclinic_metric(p: np.ndarray) -> np.ndarray:
    """Reciprocal metric tensors ``(…, 3, 3)`` of triclinic parameters ``(…, 6)`` (A, B, C, D, E, F)."""
    a, b, c, d, e, f = (p[..., i] for i in range(6))
    rows = [np.stack([a, f / 2, e / 2], -1), np.stack([f / 2, b, d / 2], -1), np.stack([e / 2, d / 2, c], -1)]
    return np.stack(rows, -2)


def _params_to_cell(system: str, p: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    if system == "cubic":
        a = 1 / math.sqrt(p[0])
        return (a, a, a), (90.0, 90.0, 90.0)
    if system == "tetragonal":
        a, c = 1 / math.sqrt(p[0]), 1 / math.sqrt(p[1])
        return (a, a, c), (90.0, 90.0, 90.0)
    if system == "hexagonal":
        a, c = math.sqrt(4 / (3 * p[0])), 1 / math.sqrt(p[1])
        return (a, a, c), (90.0, 90.0, 120.0)
    if system == "monoclinic":
        g = np.linalg.inv(np.array([[p[0], 0.0, p[3] / 2], [0.0, p[1], 0.0], [p[3] / 2, 0.0, p[2]]]))
        a, b, c = np.sqrt(np.diag(g))
        return (float(a), float(b), float(c)), (90.0, math.degrees(math.acos(g[0, 2] / (a * c))), 90.0)
    if system == "triclinic":
        g = np.linalg.inv(_triclinic_metric(np.asarray(p, dtype=float)))
        a, b, c = np.sqrt(np.diag(g))
        angles = (g[1, 2] / (b * c), g[0, 2] / (a * c), g[0, 1] / (a * b))
        return (float(a), float(b), float(c)), tuple(math.degrees(math.acos(float(v))) for v in angles)
    a, b, c = (1 / math.sqrt(v) for v in p)
    return (a, b, c), (90.0, 90.0, 90.0)


def _volume(system: str, p: np.ndarray) -> np.ndarray:
    """P-cell volumes of metric parameters ``(T, p)``."""
    if system == "cubic":
        return p[:, 0] ** -1.5
    if system == "tetragonal":
        return 1 / (p[:, 0] * np.sqrt(p[:, 1]))
    if system == "hexagonal":
        return (4 / (3 * p[:, 0])) * math.sqrt(3) / 2 / np.sqrt(p[:, 1])
    if system == "monoclinic":
        det = p[:, 1] * (p[:, 0] * p[:, 2] - p[:, 3] ** 2 / 4)
        return np.where(det > 0, 1 / np.sqrt(np.where(det > 0, det, 1.0)), np.inf)
    if system == "triclinic":
        det = np.linalg.det(_triclinic_metric(p))
        return np.where(det > 0, 1 / np.sqrt(np.where(det > 0, det, 1.0)), np.inf)
    return 1 / np.sqrt(p.prod(axis=1))


@functools.lru_cache(maxsize=1)
def _monoclinic_inverses() -> np.ndarray:
    """Inverses ``(K, 4, 4)`` of the metric-term matrices of the monoclinic trials: the first line gets indices up
    to 1 (it is one of the shortest reciprocal vectors of some basis of the lattice), three more up to 2."""
    first = np.unique(_metric_terms("monoclinic", _hkl_set("monoclinic", (1, 1, 1))), axis=0)
    rest = np.unique(_metric_terms("monoclinic", _hkl_set("monoclinic", (2, 2, 2))), axis=0)
    idx = np.array(list(itertools.product(range(len(first)), *(range(len(rest)),) * 3)))
    mats = np.concatenate([first[idx[:, :1]], rest[idx[:, 1:]]], axis=1)  # (K, 4, 4)
    mats = mats[np.abs(np.linalg.det(mats)) > 1e-9]
    out = np.linalg.inv(mats)
    out.flags.writeable = False
    return out


def _monoclinic_trials(q: np.ndarray, base_lines: int) -> np.ndarray:
    """Trial ``(A, B, C, D)`` from the first line and three more of the first ``base_lines``; only positive-definite
    metrics, ``D ≥ 0`` (the sign of ``h`` is free, so ``D`` and ``−D`` are one lattice)."""
    inv = _monoclinic_inverses()
    out = []
    for combo in itertools.combinations(range(1, min(base_lines, len(q))), 3):
        sol = inv @ q[[0, *combo]]
        ok = (sol[:, :3] > 0).all(axis=1) & (sol[:, 3] ** 2 < 4 * sol[:, 0] * sol[:, 2])
        out.append(sol[ok])
    if not out:
        return np.zeros((0, 4))
    sol = _reduce_monoclinic(np.concatenate(out))
    # one trial per lattice within 0.1 % (trials from different lines differ by the lines' errors)
    key = np.column_stack([np.log(sol[:, :3]), sol[:, 3] / np.sqrt(sol[:, 0] * sol[:, 2])])
    key = np.clip(np.round(key / 1e-3).astype(np.int64) + 16384, 0, 32767)  # 15 bits each, one int64 per trial
    _, first = np.unique(key @ (1 << np.arange(0, 60, 15, dtype=np.int64)), return_index=True)
    return sol[np.sort(first)]


def _reduce_monoclinic(p: np.ndarray) -> np.ndarray:
    """Each ``(A, B, C, D)`` in one canonical basis of its lattice: the reciprocal ``a*, c*`` plane Gauss-reduced
    (``A ≤ C``, ``0 ≤ D ≤ A``), so that one lattice found from different index assignments is one trial."""
    p = p.copy()
    _gauss_reduce(p[:, 0], p[:, 2], p[:, 3])
    return p


def _gauss_reduce(a: np.ndarray, c: np.ndarray, d: np.ndarray) -> None:
    """Gauss-reduce plane lattices in place: ``q = h²a + l²c + hl·d`` in the basis with ``a ≤ c``, ``0 ≤ d ≤ a``."""
    for _ in range(100):
        swap = a > c
        a[swap], c[swap] = c[swap], a[swap].copy()
        m = np.round(d / (2 * a))
        if not np.any(m):
            break
        c += m * m * a - m * d  # c* ← c* − m a*
        d -= 2 * m * a
    d[:] = np.abs(d)  # h → −h


def _zones(q: np.ndarray, tol: np.ndarray, base_lines: int, keep: int) -> np.ndarray:
    """Plane lattices ``(Z, 3)`` (A, B, F: ``q = h²A + k²B + hk·F``, Gauss-reduced) in the observed lines, by
    ITO's zone search (Visser, J. Appl. Cryst. 2, 89 (1969)): two of the first ``base_lines`` lines, taken as the
    rows ``h00`` and ``0k0`` of a zone (or as their second orders ``200``, ``020``: the first order of a row can
    be too weak to be seen), with their multiples ``h, k ≤ 2``, and a pair of lines ``q_m + q_n = 2(h²A + k²B)``
    — the reflections ``hk0`` and ``h k̄ 0`` — fix the zone, ``F = (q_m − q_n) / 2hk``. The ``keep`` zones most
    unlikely to index their lines by chance are returned (:func:`_zone_scores`)."""
    n = len(q)
    m_idx, n_idx = np.triu_indices(n)  # m == n: a line on which hk0 and h−k0 fall together (F = 0)
    sums, diffs = q[m_idx] + q[n_idx], np.abs(q[m_idx] - q[n_idx])
    sum_tol = tol[m_idx] + tol[n_idx]
    base = min(base_lines, n)
    rows = np.concatenate([q[:base], q[:base] / 4])
    row_tol = np.concatenate([tol[:base], tol[:base] / 4])
    found = []
    for i, j in itertools.combinations(range(rows.size), 2):
        if j == i + base:  # one line as a row and as its own second order
            continue
        for h, k in ((1, 1), (1, 2), (2, 1)):
            target = 2 * (h * h * rows[i] + k * k * rows[j])
            hit = np.abs(sums - target) <= sum_tol + 2 * (h * h * row_tol[i] + k * k * row_tol[j])
            f = diffs[hit] / (2 * h * k)
            f = f[f * f < 4 * rows[i] * rows[j] * (1 - 1e-6)]
            found += [(rows[i], rows[j], v) for v in f]
    if not found:
        return np.zeros((0, 3))
    zones = np.array(found)
    _gauss_reduce(zones[:, 0], zones[:, 1], zones[:, 2])
    key = np.column_stack([np.log(zones[:, :2]), zones[:, 2] / np.sqrt(zones[:, 0] * zones[:, 1])])
    _, first = np.unique(np.round(key / 1e-3).astype(np.int64), axis=0, return_index=True)
    zones = zones[np.sort(first)]
    order = np.argsort(-_zone_scores(zones, q, tol), kind="stable")
    return zones[order[:keep]]


def _zone_scores(zones: np.ndarray, q: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """How unlikely it is that each zone ``(Z, 3)`` indexes its lines by chance: ``Σ −ln p`` over the lines it
    indexes, ``p = min(1, π tol / S)`` the chance that a line falls within ``tol`` of some reflection ``hk0`` of a
    plane lattice of reciprocal cell area ``S = √(AB − F²/4)`` (its ``±(hk)`` pairs lie at a uniform ``π / 2S``
    per unit of q). A zone of many reflections indexes most lines whatever they are; counting indexed lines
    alone let such zones crowd out the true ones."""
    top = float(q.max() + tol.max())
    lim = int(min(8, math.ceil(math.sqrt(top / zones[:, 0].min())) + 1))
    hk = np.array([(h, k) for h in range(-lim, lim + 1) for k in range(0, lim + 1) if k > 0 or h > 0], dtype=float)
    terms = np.column_stack([hk[:, 0] ** 2, hk[:, 1] ** 2, hk[:, 0] * hk[:, 1]])
    qc = zones @ terms.T  # (Z, M)
    hit = (np.abs(qc[:, :, None] - q[None, None, :]) <= tol[None, None, :]).any(1)  # (Z, n)
    area = np.sqrt(np.maximum(zones[:, 0] * zones[:, 1] - zones[:, 2] ** 2 / 4, 1e-30))
    surprise = -np.log(np.minimum(math.pi * tol[None, :] / area[:, None], 1.0))
    return (hit * surprise).sum(1)


@functools.lru_cache(maxsize=8)
def _vote_indices(h_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns ``h, k, l`` of the reflections that vote for ``D``: ``|h| ≤ h_max``, ``k`` 1 or 2, ``l`` ±1 or ±2."""
    hkl = np.array(
        [(h, k, l) for h in range(-h_max, h_max + 1) for k in (1, 2) for l in (-2, -1, 1, 2)],  # noqa: E741
        dtype=float,
    )
    return hkl[:, 0:1], hkl[:, 1:2], hkl[:, 2:3]


def _most_voted(d: np.ndarray, w: float, top: int) -> np.ndarray:
    """The ``top`` values that most of the votes ``d`` lie within ``± w`` of (each the mean of its votes), the
    windows not overlapping. A window, not fixed bins: the votes for the true value scatter by the errors of
    five trial parameters and of the line (with the zero shift not yet known), more than a line's tolerance, and
    bins split them."""
    d = np.sort(d)
    lo, hi = np.searchsorted(d, d - w, "left"), np.searchsorted(d, d + w, "right")
    votes = hi - lo
    out: list[float] = []
    free = np.ones(d.size, dtype=bool)
    for i in np.argsort(-votes, kind="stable"):
        if len(out) == top:
            break
        if free[i]:
            out.append(float(d[lo[i] : hi[i]].mean()))
            free[np.searchsorted(d, d[i] - 2 * w, "left") : np.searchsorted(d, d[i] + 2 * w, "right")] = False
    return np.array(out)


def _triclinic_trials(q: np.ndarray, tol: np.ndarray, base_lines: int) -> np.ndarray:
    """Trial ``(A, B, C, D, E, F)`` by combining zones (ITO): two zones that share a row (``a*``, the same
    ``A`` within 0.2 %) give ``a*, b*, c*`` and the angles ``a*b*``, ``a*c*``; the last angle (``D = 2 b*·c*``)
    is what makes most lines fall on reflections ``hkl`` with ``k, l ≠ 0``: each line, given small such indices,
    votes for a ``D``, and the ``D`` values with the most votes (within the lines' tolerance) are the trials.
    Only positive-definite metrics are returned."""
    plane = _zones(q, tol, max(base_lines, ZONE_LINES), ZONES)
    width = float(np.median(tol))
    out = []
    for z1, z2 in itertools.combinations(range(len(plane)), 2):
        for r1, r2 in itertools.product((0, 1), repeat=2):
            if abs(plane[z1, r1] / plane[z2, r2] - 1) > 2e-3:
                continue
            a, b, f = plane[z1, r1], plane[z1, 1 - r1], plane[z1, 2]
            c, e = plane[z2, 1 - r2], plane[z2, 2]
            h, k, l = _vote_indices(min(VOTE_H, int(math.sqrt(q.max() / a))))  # noqa: E741
            known = h * h * a + k * k * b + l * l * c + h * k * f + h * l * e
            d = ((q[None, :] - known) / (k * l)).ravel()
            d = d[d * d < 4 * b * c]
            if d.size == 0:
                continue
            voted = _most_voted(d, VOTE_WIDTH * width, VOTED_D)
            trials = np.tile([a, b, c, 0.0, e, f], (voted.size, 1))
            trials[:, 3] = voted
            out.append(trials)
    if not out:
        return np.zeros((0, 6))
    trials = np.concatenate(out)
    return trials[np.linalg.det(_triclinic_metric(trials)) > 0]


def _trials(system: str, q: np.ndarray, base_lines: int, max_index: int, tol: np.ndarray | None = None) -> np.ndarray:
    """Trial metric parameters ``(T, p)`` from small indices given to combinations of the first lines."""
    if system == "monoclinic":
        return _monoclinic_trials(q, base_lines)
    if system == "triclinic":
        return _triclinic_trials(q, tol, base_lines)
    p = _PARAMETERS[system]
    limit = max_index if p < 3 else min(max_index, 2)
    terms = np.unique(_metric_terms(system, _hkl_set(system, (limit,) * 3)), axis=0)
    lines = list(itertools.combinations(range(min(base_lines, len(q))), p))
    out = []
    # all ordered p-tuples of term vectors (non-singular) against every combination of base lines
    idx = np.array(list(itertools.product(range(len(terms)), repeat=p)))
    mats = terms[idx]  # (K, p, p)
    det = np.linalg.det(mats)
    ok = np.abs(det) > 1e-9
    mats = mats[ok]
    inv = np.linalg.inv(mats)
    for combo in lines:
        sol = inv @ q[list(combo)]  # (K, p)
        out.append(sol[(sol > 0).all(axis=1)])
    return np.concatenate(out) if out else np.zeros((0, p))


def _count_indexed(system: str, params: np.ndarray, q: np.ndarray, tol: np.ndarray, max_l: int) -> np.ndarray:
    """How many of the lines ``q`` (with tolerances ``tol``) each trial ``(T, p)`` indexes."""
    if system == "cubic":
        sums = np.unique([h * h + k * k + l * l for h in range(13) for k in range(13) for l in range(13)])[1:]  # noqa: E741
        r = q[None, :] / params[:, :1]
        j = np.clip(np.searchsorted(sums, r), 1, len(sums) - 1)
        near = np.minimum(np.abs(sums[j] - r), np.abs(sums[j - 1] - r)) * params[:, :1]
        return (near <= tol[None, :]).sum(1)
    if system in ("tetragonal", "hexagonal"):
        n = 12
        if system == "tetragonal":
            ms = np.unique([h * h + k * k for h in range(n + 1) for k in range(n + 1)])
        else:
            ms = np.unique([h * h + h * k + k * k for h in range(n + 1) for k in range(-n, n + 1)])
            ms = ms[ms >= 0]
        hit = np.zeros((params.shape[0], q.shape[0]), dtype=bool)
        for l in range(max_l + 1):  # noqa: E741
            r = (q[None, :] - l * l * params[:, 1:2]) / params[:, :1]
            j = np.clip(np.searchsorted(ms, r), 1, len(ms) - 1)
            near = np.minimum(np.abs(ms[j] - r), np.abs(ms[j - 1] - r)) * params[:, :1]
            hit |= (near <= tol[None, :]) & (r > -0.5)
        return hit.sum(1)
    if system == "monoclinic":
        return _count_monoclinic(params, q, tol, max_l)
    if system == "triclinic":
        return _count_triclinic(params, q, tol, max_l)
    hit = np.zeros((params.shape[0], q.shape[0]), dtype=bool)
    for h in range(max_l + 1):
        for k in range(max_l + 1):
            rem = q[None, :] - h * h * params[:, 0:1] - k * k * params[:, 1:2]
            lval = np.sqrt(np.maximum(rem, 0) / params[:, 2:3])
            near = np.abs(np.round(lval) ** 2 * params[:, 2:3] - rem)
            hit |= (near <= tol[None, :]) & (rem > -tol[None, :])
    return hit.sum(1)


def _count_monoclinic(params: np.ndarray, q: np.ndarray, tol: np.ndarray, max_index: int) -> np.ndarray:
    """:func:`_count_indexed` for monoclinic trials: for each ``h`` and ``k ≥ 0`` the ``l ≥ 0`` nearest to each
    line is a root of ``C l² + D h l = q − A h² − B k²`` (both roots: the left side is not monotonic for
    ``D h < 0``). Trials are taken in chunks of similar cell edges, each looped over the indices its cells need."""
    counts = np.zeros(params.shape[0], dtype=int)
    if params.shape[0] == 0:
        return counts
    big = math.sqrt(float(q.max()))
    det = params[:, 0] * params[:, 2] - params[:, 3] ** 2 / 4
    h_need = np.minimum(np.ceil(big * np.sqrt(params[:, 2] / det)), max_index).astype(int)  # a·sqrt(q_max)
    k_need = np.minimum(np.ceil(big / np.sqrt(params[:, 1])), max_index).astype(int)
    order = np.lexsort((k_need, h_need))
    q32, tol32 = q.astype(np.float32)[None, :], tol.astype(np.float32)[None, :]  # ample for 1e-3 tolerances
    for start in range(0, len(order), 20000):
        rows = order[start : start + 20000]
        a_, b_, c_, d_ = (params[rows, i : i + 1].astype(np.float32) for i in range(4))
        half_c = 0.5 / c_
        hit = np.zeros((rows.size, q.size), dtype=bool)
        for h in range(-int(h_need[rows].max()), int(h_need[rows].max()) + 1):
            dh = d_ * h
            for k in range(int(k_need[rows].max()) + 1):
                rem = q32 - (a_ * (h * h) + b_ * (k * k))
                sd = np.sqrt(np.maximum(dh * dh + 4 * c_ * rem, 0.0))
                for root in (sd, -sd):
                    lv = np.maximum(np.round((root - dh) * half_c), 0.0)
                    hit |= np.abs((c_ * lv + dh) * lv - rem) <= tol32
        counts[rows] = hit.sum(1)
    return counts


def _count_triclinic(params: np.ndarray, q: np.ndarray, tol: np.ndarray, max_index: int) -> np.ndarray:
    """:func:`_count_indexed` for triclinic trials."""
    return _triclinic_hits(params, q, tol, max_index).sum(1)


def _triclinic_hits(params: np.ndarray, q: np.ndarray, tol: np.ndarray, max_index: int) -> np.ndarray:
    """Which lines ``(T, n)`` each triclinic trial indexes: every reflection within the indices the largest cell
    of a chunk needs (at most ``max_index``), against every line."""
    hits = np.zeros((params.shape[0], q.size), dtype=bool)
    if params.shape[0] == 0:
        return hits
    g = np.linalg.inv(_triclinic_metric(params))
    lengths = np.sqrt(np.clip(np.diagonal(g, axis1=1, axis2=2), 0, None))  # a, b, c of each trial
    need = np.minimum(np.ceil(lengths * math.sqrt(float(q.max()))), min(max_index, 8)).astype(int)
    order = np.lexsort(tuple(need.T))
    for start in range(0, len(order), 500):
        rows = order[start : start + 500]
        terms = _metric_terms("triclinic", _hkl_set("triclinic", tuple(int(v) for v in need[rows].max(0))))
        qc = (params[rows] @ terms.T).astype(np.float32)  # (T, M)
        hits[rows] = (np.abs(qc[:, :, None] - q[None, None, :].astype(np.float32)) <= tol.astype(np.float32)).any(1)
    return hits


def _chance_scores(hits: np.ndarray, volume: np.ndarray, q: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """How unlikely it is that primitive cells of ``volume`` (T,) index the lines ``hits`` (T, n) by chance:
    ``Σ −ln p`` over the indexed lines, ``p = min(1, 2 tol · π V √q)`` the chance that a line falls within
    ``tol`` of a reflection (the ``±hkl`` pairs of a P lattice lie at ``π V √q`` per unit of q). What trials
    are refined by: a large cell indexes nearly any line, a small one that indexes them all cannot by chance."""
    density = math.pi * volume[:, None] * np.sqrt(q)[None, :]
    surprise = -np.log(np.minimum(2 * tol[None, :] * density, 1.0))
    return (hits * surprise).sum(1)


def _reduced_triclinic(p: np.ndarray) -> np.ndarray:
    """Triclinic parameters of the same lattice in its Niggli-reduced basis."""
    from pymatgen.core import Lattice

    direct = np.linalg.cholesky(np.linalg.inv(_triclinic_metric(np.asarray(p, dtype=float))))  # rows a, b, c
    cell = np.array(Lattice(direct).get_niggli_reduced_lattice().matrix)
    g = np.linalg.inv(cell @ cell.T)
    return np.array([g[0, 0], g[1, 1], g[2, 2], 2 * g[1, 2], 2 * g[0, 2], 2 * g[0, 1]])


def _signature(system: str, p: np.ndarray) -> tuple[int, ...]:
    """Metric parameters rounded to 0.5 % (one refined trial per lattice; triclinic: of the Niggli-reduced cell,
    lengths to 0.5 %, angles to 0.5°)."""
    if system == "triclinic":
        lengths, angles = _params_to_cell(system, _reduced_triclinic(p))
        return (*np.round(np.log(lengths) / 0.005).astype(int), *np.round(np.array(angles) / 0.5).astype(int))
    if system == "monoclinic":
        return (*np.round(np.log(p[:3]) / 0.005).astype(int), int(round(p[3] / math.sqrt(p[0] * p[2]) / 0.005)))
    return tuple(np.round(np.log(p) / 0.005).astype(int))


def _is_metric(system: str, p: np.ndarray) -> bool:
    """Whether ``p`` is the metric of a lattice: a monoclinic one's cross term must keep it positive definite
    (|p₃| < 2 √(p₀ p₂), i.e. a real angle β); least squares on a few lines of a residual pattern left it
    beyond, and the cell lengths came out NaN (measured)."""
    if system == "monoclinic":
        return bool(np.all(p[:3] > 0) and p[3] * p[3] < 4 * p[0] * p[2] * (1 - 1e-9))
    if system == "triclinic":
        return bool(np.all(np.linalg.eigvalsh(_triclinic_metric(np.asarray(p, dtype=float))) > 0))
    return bool(np.all(p > 0))


def _calc_lines(system: str, p: np.ndarray, q_max: float) -> tuple[np.ndarray, np.ndarray]:
    """All reflections ``hkl (m, 3)`` of the P lattice with ``q ≤ q_max`` and their ``q``."""
    a, b, c = _params_to_cell(system, p)[0]
    if system == "hexagonal":
        limits = (int(math.ceil(math.sqrt(q_max) * a)) + 1,) * 2 + (int(math.ceil(math.sqrt(q_max) * c)) + 1,)
    else:
        limits = tuple(int(math.ceil(math.sqrt(q_max) * v)) + 1 for v in (a, b, c))
    hkl = _hkl_set(system, limits)  # one per distinct metric-term vector
    qs = _metric_terms(system, hkl) @ p
    keep = qs <= q_max
    return hkl[keep], qs[keep]


def _assign(
    system: str, p: np.ndarray, q: np.ndarray, tol: np.ndarray, centring: str = "P"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest allowed reflection of each line: ``(hkl (n, 3), q_calc (n,), indexed (n,))``."""
    hkl, qc = _calc_lines(system, p, float(q.max() + 3 * tol.max()))
    allowed = _allowed(centring, hkl)
    hkl, qc = hkl[allowed], qc[allowed]
    if qc.size == 0:
        return -np.ones((q.size, 3), dtype=int), np.full(q.size, np.nan), np.zeros(q.size, dtype=bool)
    j = np.argmin(np.abs(qc[None, :] - q[:, None]), axis=1)
    return hkl[j], qc[j], np.abs(qc[j] - q) <= tol


def _refine(
    system: str, p: np.ndarray, peaks: Peaks, n: int, tol: np.ndarray, zero: bool, centring: str = "P"
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Least-squares metric parameters (and zero shift) on the indexed lines, reassigning twice."""
    from scipy.optimize import least_squares

    x = peaks.x[:n]
    lam = peaks.wavelength
    z = 0.0
    for _ in range(3):
        q = 1 / _to_d(x - z, peaks.axis, lam) ** 2
        hkl, _, ok = _assign(system, p, q, tol, centring)
        # one line more than parameters, so that the fit is tested; exactly as many only when there are no more
        # lines (a cubic cell from two lines: a and the zero shift)
        if ok.sum() < p.size + int(zero) + int(n > p.size + int(zero)):
            break
        terms = _metric_terms(system, hkl[ok])
        xo, so = x[ok], np.maximum(peaks.sigma_x[:n][ok], 1e-6)

        def resid(
            v: np.ndarray, terms: np.ndarray = terms, xo: np.ndarray = xo, so: np.ndarray = so, m: int = p.size
        ) -> np.ndarray:
            pp, zz = v[:m], (v[m] if zero else 0.0)
            return (_from_q2(terms @ pp, peaks.axis, lam) + zz - xo) / so

        v0 = np.concatenate([p, [z]]) if zero else p.copy()
        try:
            fit = least_squares(resid, v0, x_scale=np.abs(v0) + 1e-3)
        except ValueError:
            break
        # the cross terms of a monoclinic or triclinic metric may be negative: _is_metric checks what must hold
        if not np.all(np.isfinite(fit.x)) or not _is_metric(system, fit.x[: p.size]):
            break
        p = fit.x[: p.size]
        z = float(fit.x[p.size]) if zero else 0.0
    q = 1 / _to_d(x - z, peaks.axis, lam) ** 2
    hkl, qc, ok = _assign(system, p, q, tol, centring)
    return p, z, hkl, np.where(ok, qc, np.nan)


def _figure_of_merit(
    system: str, p: np.ndarray, q: np.ndarray, qc: np.ndarray, centring: str, floor: np.ndarray, miss: np.ndarray
) -> float:
    """de Wolff's M_N: ``q_N / (2 ε̄ N_calc)``. Each line's error is at least ``floor`` (its position's standard
    uncertainty in q: closer agreement is chance, and on noise-free data a wrong cell would otherwise win on
    rounding); an unindexed line counts with the error ``miss`` (the tolerance it missed)."""
    ok = np.isfinite(qc)
    if ok.sum() == 0:
        return 0.0
    err = np.where(ok, np.maximum(np.abs(np.where(ok, qc, 0.0) - q), floor), miss)
    eps = float(np.mean(err))
    hkl, allq = _calc_lines(system, p, float(q.max()))
    allq = allq[_allowed(centring, hkl)]
    n_calc = max(np.unique(np.round(allq / max(float(q.max()), 1e-12), 9)).size, 1)
    return float(q.max() / (2 * max(eps, 1e-300) * n_calc))


def index_peaks(
    peaks: Peaks,
    systems: tuple[str, ...] = SYSTEMS,
    lines: int = 20,
    tolerance: float | None = None,
    max_volume: float = 2500.0,
    max_unindexed: int = 2,
    zero_shift: bool = True,
    top: int = 5,
    base_lines: int = 6,
    max_index: int = 4,
    refine_trials: int = 40,
    min_merit: float = MIN_MERIT,
    triclinic_lines: int = 30,
) -> list[IndexedCell]:
    """Index the first ``lines`` peaks (a triclinic cell: the first ``triclinic_lines``); the best solutions (at
    most ``top``, distinct), best first.

    ``tolerance``: how far (axis units) a line may lie from its reflection in the trial search (default: 0.6 of
    the median peak width or half the line's own width, whichever is larger, but at least three standard
    uncertainties of the line's position; a zero shift
    is not known yet); the refined cells (with their zero shift) must index each line within half of that.
    Solutions that leave more than ``max_unindexed`` of the lines unindexed, whose P cell exceeds
    ``max_volume`` Å³ or whose figure of merit is below ``min_merit`` are dropped; the rest are ranked by
    :func:`score`."""
    for system in systems:
        if system not in SYSTEMS:
            raise InputError(f"indexing: unknown crystal system {system!r}; known: {', '.join(SYSTEMS)}")
    n = min(lines, len(peaks))
    if n < 2:
        raise InputError(f"indexing needs at least 2 peaks; the pattern has {len(peaks)}")
    width = float(np.median(peaks.fwhm[:n]))
    n_all = min(max(lines, triclinic_lines), len(peaks))
    x_all = peaks.x[:n_all]
    # a line fitted much wider than the rest is two or more reflections in one: its position is their centroid
    tol_x = tolerance if tolerance is not None else np.maximum(0.6 * width, 0.5 * peaks.fwhm[:n_all])
    tol_x = np.maximum(np.maximum(tol_x, 0), 3 * peaks.sigma_x[:n_all])
    tol_all = tol_x * _dq2_dx(x_all, peaks.axis, peaks.wavelength)
    floor_all = peaks.sigma_x[:n_all] * _dq2_dx(x_all, peaks.axis, peaks.wavelength)

    found: list[IndexedCell] = []
    n_rank = min(lines, len(peaks))
    # a triclinic cell is searched, refined and checked on more lines: six parameters fitted to the few lines with
    # h ≠ 0 (a short axis puts the first ten or more lines in one zone) leave near-equal cells that only more lines
    # tell apart; where no triclinic cell indexes that many (overlaps among the later lines), the first `lines`
    passes = [(system, n_rank) for system in sorted(systems, key=SYSTEMS.index)]
    if "triclinic" in systems and min(triclinic_lines, len(peaks)) > n_rank:
        passes[-1] = ("triclinic", min(triclinic_lines, len(peaks)))
        passes.append(("triclinic", n_rank))
    for system, n in passes:
        if system == "triclinic" and n == n_rank and any(c.system == "triclinic" for c in found):
            continue
        x, tol, floor = x_all[:n], tol_all[:n], floor_all[:n]
        q = 1 / peaks.d[:n] ** 2
        fine = tol / 2.0
        # too few lines to tell such a cell from a wrong one; a cubic cell from two lines only when it indexes both
        # (diamond has just 111 and 220 below 90° with Cu Kα: their ratio, 3 : 8, is the test)
        if n < _PARAMETERS[system] + (1 if system == "cubic" else 2):
            continue
        allowed_miss = 0 if n < _PARAMETERS[system] + 2 else max_unindexed
        if system in ("monoclinic", "triclinic") and _settled(found, min_merit, system):
            continue
        trials = _trials(system, q, base_lines, max_index, tol)
        if trials.size == 0:
            continue
        trials = trials[_volume(system, trials) <= max_volume]
        if trials.size == 0:
            continue
        trials = np.unique(np.round(trials / trials.max(), 6) * trials.max(), axis=0)
        max_l = int(math.ceil(math.sqrt(q.max()) * max_volume ** (1 / 3) * 2))
        max_l = min(max_l, 12)
        # a cheap first cut on the first 8 lines, then the count over all of them
        first = min(n, 8)
        pre = np.concatenate(
            [
                _count_indexed(system, trials[s : s + 20000], q[:first], tol[:first], max_l)
                for s in range(0, len(trials), 20000)
            ]
        )
        trials = trials[pre >= first - allowed_miss]
        if trials.size == 0:
            continue
        if system == "triclinic":
            hits = _triclinic_hits(trials, q, tol, max_l)
            count = hits.sum(1)
        else:
            count = _count_indexed(system, trials, q, tol, max_l)
        # a trial from three lines is off by their errors (and the zero shift), so it may index only part of the
        # higher lines before it is refined: refine those that index at least 60 %
        need = max(int(math.ceil(0.6 * n)), _PARAMETERS[system] + 1)
        volume = _volume(system, trials)
        good = np.flatnonzero(count >= need)
        best: list[int] = []
        seen: set[tuple[int, ...]] = set()
        # refine the trials that index the most lines and, apart, the smallest cells that index enough of them:
        # big cells index nearly any line by coincidence and could crowd out the right one
        most = good[np.lexsort((volume[good], -count[good]))]
        if system == "triclinic":  # triclinic trials are many, and a big cell indexes as many lines as the true one
            most = good[np.argsort(-_chance_scores(hits[good], volume[good], q, tol), kind="stable")]
        for order in (most, good[np.argsort(volume[good])]):
            taken = 0
            for k in order:  # one trial per lattice (metric parameters within 0.5 %)
                if taken == refine_trials:
                    break
                sig = _signature(system, trials[k])
                if sig not in seen:
                    seen.add(sig)
                    best.append(int(k))
                    taken += 1
        for k in best:
            if not _is_metric(system, trials[k]):
                continue
            p, z, hkl, qc = _refine(system, trials[k], peaks, n, tol, zero_shift)
            if system == "triclinic":  # reported in the Niggli-reduced basis (the lines are reassigned in it below)
                p = _reduced_triclinic(p)
            lengths, angles = _params_to_cell(system, p)
            if _volume(system, p[None, :])[0] > max_volume:
                continue
            qz = 1 / _to_d(x - z, peaks.axis, peaks.wavelength) ** 2
            options = []
            for centring in _CENTRINGS[system]:
                hkl_c, qc_c, ok_c = _assign(system, p, qz, fine, centring)
                if int((~ok_c).sum()) > allowed_miss:
                    continue
                # ranked by the first `lines` only, as the other systems are (a figure of merit over more lines
                # is lower, and a triclinic cell would lose to coincidences of higher symmetry on that alone)
                r = n_rank
                qcc = np.where(ok_c[:r], qc_c[:r], np.nan)
                m = _figure_of_merit(system, p, qz[:r], qcc, centring, floor[:r], fine[:r])
                options.append((m, centring, int((~ok_c[:r]).sum()), np.where(ok_c[:r, None], hkl_c[:r], -1)))
            if not options:
                continue
            m, centring, miss, hkl_c = max(options, key=lambda o: o[0])
            found.append(IndexedCell(system, centring, lengths, angles, z, m, n_rank, miss, hkl_c))
    return _rank(found, top, min_merit)


MAX_MERIT = 1000.0
"""A figure of merit a monoclinic solution of a lab pattern is not expected to exceed (the simulated ZrO2 and
Ga2O3 patterns of the tests reach M20 ≈ 450–480)."""


def _settled(found: list[IndexedCell], min_merit: float, system: str = "monoclinic") -> bool:
    """Whether a solution of higher symmetry indexes every line so well that no cell of ``system`` (monoclinic or
    triclinic) could outrank it: that would need M_N above its score × 3^(parameters − 1) ≥ :data:`MAX_MERIT`.
    Then the (costly) search of that system is skipped."""
    scores = [score(c) for c in found if c.m_n >= min_merit and c.unindexed == 0]
    return bool(scores) and max(scores) * PARAMETER_PENALTY ** (_PARAMETERS[system] - 1) >= MAX_MERIT


def index_pattern(
    x: np.ndarray,
    y: np.ndarray,
    axis: str,
    wavelength: Wavelength | None,
    sigma: np.ndarray | None = None,
    significance: float = 5.0,
    **options,
) -> tuple[Peaks, list[IndexedCell]]:
    """:func:`find_peaks` then :func:`index_peaks` (``options``), with a zero shift refined on a 2θ axis only."""
    peaks = find_peaks(x, y, axis, wavelength, sigma, significance)
    return peaks, index_peaks(peaks, zero_shift=axis == "two_theta", **options)


_SYMMETRY_ORDER = {"cubic": 0, "hexagonal": 1, "tetragonal": 2, "orthorhombic": 3, "monoclinic": 4, "triclinic": 5}


def score(cell: IndexedCell) -> float:
    """What solutions are ranked by: ``M_N / 3^(parameters − 1) / 2^unindexed``.

    A cell with more metric parameters can nearly always fit the same lines a little closer, or take in a
    noise peak, without being more likely; a cubic cell needs a 3× lower M_N than a tetragonal or hexagonal one
    to rank below it, and 9× lower than an orthorhombic one; each line left unindexed halves it. Calibrated on
    simulated lab patterns: rock salt with a noise peak among its 10 lines gave cubic F at M10 = 2,981 (that line
    unindexed) and an orthorhombic A cell of twice the volume at M10 = 335 indexing it; rock salt without noise
    peaks, cubic F at 9,880 and an orthorhombic A cell of a sixth of the volume at 11,520; carbon-24
    orthorhombic cells against tetragonal or hexagonal cells of M20 16–45 that index all but 0–2 of their lines
    (``benchmarks/bench_index.py``)."""
    return cell.m_n / PARAMETER_PENALTY ** (_PARAMETERS[cell.system] - 1) / UNINDEXED_PENALTY**cell.unindexed


def same_lattice(a, b) -> bool:
    """Whether two pymatgen ``Lattice`` objects are one lattice in different bases (volumes within 1 %,
    a mapping within 1 % in lengths and 1° in angles)."""
    return abs(a.volume / b.volume - 1) < 0.01 and a.find_mapping(b, ltol=0.01, atol=1.0) is not None


def _rank(found: list[IndexedCell], top: int, min_merit: float) -> list[IndexedCell]:
    """Distinct lattices with ``M_N ≥ min_merit``, best :func:`score` first. One solution per lattice: the same
    lattice found in two settings (fcc is also body-centred tetragonal with c/a = √2; an orthorhombic F cell with
    a = b is the tetragonal I lattice) is kept in its highest symmetry."""
    from pymatgen.core import Lattice

    found = [c for c in found if c.m_n >= min_merit]
    lattices = [Lattice(c.primitive) for c in found]
    kept: list[int] = []
    for k in sorted(range(len(found)), key=lambda k: (_SYMMETRY_ORDER[found[k].system], -score(found[k]))):
        if not any(same_lattice(lattices[j], lattices[k]) for j in kept):
            kept.append(k)
    return sorted((found[k] for k in kept), key=lambda c: -score(c))[:top]
