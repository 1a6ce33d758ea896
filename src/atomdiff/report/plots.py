"""Matplotlib figures written as PNG (Agg backend, no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from atomdiff.files import atomic_path

AXIS_LABELS = {
    "two_theta": "2θ (degrees)",
    "q": "Q (Å$^{-1}$)",
    "r": "r (Å)",
    "energy": "energy (eV)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pattern(
    path: str | os.PathLike,
    x: np.ndarray,
    y: np.ndarray,
    axis: str = "two_theta",
    ylabel: str = "intensity (arb. units)",
    title: str | None = None,
    ticks: Sequence[float] | None = None,
    tick_labels: Sequence[str] | None = None,
) -> None:
    """A single pattern with optional reflection ticks (and hkl labels for the strongest)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    ax.plot(x, y, lw=1.0, color="C0")
    if ticks is not None and len(ticks):
        lo, hi = float(np.min(y)), float(np.max(y))
        span = hi - lo if hi > lo else 1.0
        ax.vlines(ticks, lo - 0.08 * span, lo - 0.02 * span, color="C3", lw=0.8, label="reflections")
        ax.set_ylim(lo - 0.1 * span, hi + 0.12 * span)
        if tick_labels is not None:
            for t, label in zip(ticks, tick_labels, strict=False):
                if label:
                    ax.annotate(label, (t, lo - 0.02 * span), fontsize=6, rotation=90, va="bottom", ha="center")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(ylabel)
    ax.set_xlim(float(x[0]), float(x[-1]))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_fit(
    path: str | os.PathLike,
    x: np.ndarray,
    y_obs: np.ndarray,
    y_calc: np.ndarray,
    axis: str = "two_theta",
    ticks: Sequence[float] | None = None,
    title: str | None = None,
) -> None:
    """Observed, calculated and difference curves with reflection ticks (the Rietveld plot)."""
    rows = [("reflections", ticks)] if ticks is not None and len(ticks) else []
    plot_phases(path, x, y_obs, y_calc, [], rows, axis=axis, title=title)


def plot_phases(
    path: str | os.PathLike,
    x: np.ndarray,
    y_obs: np.ndarray,
    y_calc: np.ndarray,
    phases: Sequence[tuple[str, np.ndarray]],
    ticks: Sequence[tuple[str, Sequence[float]]],
    axis: str = "two_theta",
    title: str | None = None,
) -> None:
    """Multi-phase Rietveld plot: observed, total, each phase (with background), difference, a tick row per phase."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    span = float(np.max(y_obs) - np.min(y_obs)) or 1.0
    ax.plot(x, y_obs, ".", ms=2, color="k", label="observed")
    ax.plot(x, y_calc, lw=1.0, color="C3", label="calculated")
    for k, (name, y) in enumerate(phases):
        ax.plot(x, y, lw=0.8, color=f"C{4 + k}", alpha=0.8, label=name)
    offset = float(np.min(y_obs)) - 0.15 * span
    for k, (_name, t) in enumerate(ticks):
        base = offset + (0.06 + 0.05 * k) * span
        ax.vlines(t, base, base + 0.035 * span, color=f"C{4 + k}", lw=0.8)
    ax.plot(x, y_obs - y_calc + offset - 0.05 * span * len(ticks), lw=0.8, color="C0", label="difference")
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel("intensity")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_curves(
    path: str | os.PathLike,
    curves: Sequence[tuple[np.ndarray, np.ndarray, str]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ncols: int = 1,
    logy: bool = False,
) -> None:
    """Several labelled curves (RDF, angle distribution, spectra) on one axis (``logy``: logarithmic y axis, for
    quantities that span decades such as a misfit along a sampling trajectory)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for x, y, label in curves:
        ax.plot(x, y, lw=1.0, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if any(label for _, _, label in curves):
        ax.legend(fontsize=8, ncols=ncols)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_energy_vs_atoms(
    path: str | os.PathLike,
    groups: Sequence[tuple[np.ndarray, np.ndarray, str]],
    reference: float | None = None,
    ylabel: str = "grain-boundary energy (J/m²)",
    title: str | None = None,
    xlabel: str = "atoms in the cell",
) -> None:
    """Energies against atom counts, one marker style per group; ``reference`` as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for (atoms, energy, label), marker in zip(groups, "os^Dv", strict=False):
        ax.scatter(atoms, energy, marker=marker, s=28, alpha=0.8, label=label)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=0.8, label=f"best builder {reference:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | os.PathLike) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
