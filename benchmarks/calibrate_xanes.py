"""Energy axis for the shared a-C XANES bins: FEFF10 spectra of diamond and graphite against the shared ones.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_xanes.py [--cache DIR] [--ac d1.5_1:2 ...]

1. FEFF10 (through feff10-rs) at the CLI defaults of ``atomdiff simulate xanes`` (cluster 6 Å, FMS 5 Å, SCF
   4 Å, RPA core hole, one FEFF run at a time) on every unique site of the crystalline references
   ``../shared/data/a-C_xanes/poscar/misc/{diamond,graphite}.vasp`` (identical sites come from the environment
   cache); each FEFF run is timed. ``--ac CELL:N`` adds N random sites of an a-C cell of ``poscar/train``.
2. The shared spectra ``xanes/misc/{diamond,graphite}.csv`` (100 bins, no energies; every row the same) are
   mapped onto FEFF's photon energies by ``E(bin) = e0 + k·bin``. For a map, each shared spectrum ``y`` is
   compared with FEFF's site average ``μ(E(bin))`` after the best amplitude scale ``a`` (least squares); the
   misfit ``Σ(y − aμ)² / Σy² = 1 − cos²(y, μ)`` is 0 for identical shapes and 1 for orthogonal ones. A grid
   search (coarse, then fine around the best) minimises the sum of the two references' misfits (the joint
   map) and each one alone (to see whether the references agree). Bins mapped above FEFF's last energy are
   not allowed; below FEFF's first energy μ is its first (pre-edge) value.
3. The a-C sites of ``--ac``, if any, are compared with their own shared per-atom rows on the joint map, with
   no further fitting: a check of the map on spectra that differ from atom to atom.

Prints the result, writes ``docs/results/xanes_calibration.json`` and ``docs/xanes_calibration.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import atomdiff.physics.xanes.feff as feff_module
from atomdiff.physics.xanes import FeffSettings, SpectrumCache, cut_clusters, default_cache_dir, simulate_xanes
from atomdiff.structure.io import read_structure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "a-C_xanes"
REFERENCES = ("diamond", "graphite")
BOND = 1.85  # Å, the coordination cutoff of the data set's README


class TimedFeff:
    """FEFF through feff10-rs, recording the cluster size and wall time of every run."""

    def __init__(self, label: str):
        self.label = label
        self.runs: list[dict] = []

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        lines = text.splitlines()
        n_atoms = len(lines) - lines.index("ATOMS") - 3
        site = int(lines[0].split(" site ")[1].split()[0])
        start = time.perf_counter()
        out = feff_module.run_feff(text)
        self.runs.append(
            {"structure": self.label, "site": site, "atoms": n_atoms, "seconds": time.perf_counter() - start}
        )
        return out


def compute(name: str, path: Path, settings: FeffSettings, cache: SpectrumCache, sites="all", seed: int = 0):
    """Site spectra of one structure (FEFF runs only for environments not in the cache) and the timed runs."""
    structure = read_structure(path)
    runner = TimedFeff(name)
    start = time.perf_counter()
    result = simulate_xanes(structure, settings, sites, cache=cache, runner=runner, seed=seed, workers=1)
    wall = time.perf_counter() - start
    print(
        f"{name}: {len(result.sites)} sites, {result.computed} FEFF runs, {result.cached} from the cache, "
        f"{wall:.1f} s"
        + "".join(f"\n  site {r['site']}: {r['atoms']} atoms, {r['seconds']:.1f} s" for r in runner.runs)
    )
    return structure, result, runner.runs


def shared_rows(split: str, name: str) -> np.ndarray:
    """The shared per-atom spectra ``(n_atoms, 100)`` of ``xanes/<split>/<name>.csv`` or ``.txt``."""
    csv_path = DATA / "xanes" / split / f"{name}.csv"
    if csv_path.is_file():
        return np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
    return np.loadtxt(DATA / "xanes" / split / f"{name}.txt", ndmin=2)


def misfit(y: np.ndarray, energy: np.ndarray, mu: np.ndarray, e0: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``1 − cos²(y, μ(e0 + k·bin))`` on the grid ``e0 × k`` (``inf`` where bins fall above FEFF's range)."""
    bins = np.arange(y.shape[-1], dtype=np.float64)
    out = np.empty((e0.size, k.size))
    yy = float(y @ y)
    for i, start in enumerate(e0):  # one row at a time keeps memory small
        grid = start + k[:, None] * bins[None, :]
        m = np.interp(grid, energy, mu, left=mu[0], right=np.nan)
        num, den = m @ y, np.einsum("kb,kb->k", m, m)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = 1.0 - num**2 / (den * yy)
        value[~np.isfinite(value) | (num <= 0)] = np.inf
        out[i] = value
    return out


def best_map(ys, feffs, e0_range: tuple[float, float], k_range: tuple[float, float]) -> tuple[float, float, float]:
    """``(e0, k, summed misfit)`` minimising the summed misfit: a coarse grid search, then two finer ones."""
    e0 = np.arange(*e0_range, 0.2)
    k = np.arange(*k_range, 0.005)
    for _ in range(3):
        total = sum(misfit(y, *f, e0, k) for y, f in zip(ys, feffs, strict=True))
        i, j = np.unravel_index(np.argmin(total), total.shape)
        best = (float(e0[i]), float(k[j]), float(total[i, j]))
        de, dk = (e0[1] - e0[0]) * 2, (k[1] - k[0]) * 2
        e0 = np.linspace(best[0] - de, best[0] + de, 81)
        k = np.linspace(max(best[1] - dk, 1e-3), best[1] + dk, 81)
    return best


def scale_and_r(y: np.ndarray, energy: np.ndarray, mu: np.ndarray, e0: float, k: float) -> tuple[float, float, float]:
    """Amplitude ``a`` (y ≈ a·μ), misfit ``1 − cos²`` and Pearson correlation at one map."""
    m = np.interp(e0 + k * np.arange(y.size), energy, mu, left=mu[0])
    a = float(m @ y / (m @ m))
    return a, float(1 - (m @ y) ** 2 / ((m @ m) * (y @ y))), float(np.corrcoef(m, y)[0, 1])


def landscape(ys, feffs, e0: np.ndarray, k: np.ndarray) -> np.ndarray:
    return sum(misfit(y, *f, e0, k) for y, f in zip(ys, feffs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="site-spectrum cache (default: atomdiff's)")
    parser.add_argument("--ac", action="append", default=[], help="CELL:N, N random sites of poscar/train/CELL.vasp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "xanes_calibration.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "xanes_calibration.png")
    args = parser.parse_args()
    settings = FeffSettings("C")  # the defaults of `atomdiff simulate xanes`
    cache = SpectrumCache(args.cache or default_cache_dir())
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}

    runs: list[dict] = []
    feff: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in REFERENCES:
        _, result, timed = compute(name, DATA / "poscar" / "misc" / f"{name}.vasp", settings, cache)
        feff[name] = (result.energy, result.mean)
        runs += timed
    ac_sites: list[dict] = []
    for spec in args.ac:
        cell, count = spec.split(":")
        structure, result, timed = compute(
            cell, DATA / "poscar" / "train" / f"{cell}.vasp", settings, cache, sites=int(count), seed=args.seed
        )
        rows = shared_rows("train", cell)
        runs += timed
        bonded = cut_clusters(structure, list(result.sites), BOND)
        for site, spectrum, near in zip(result.sites, result.spectra, bonded, strict=True):
            ac_sites.append(
                {
                    "cell": cell,
                    "site": site,
                    "neighbours": len(near) - 1,
                    "energy": result.energy,
                    "mu": spectrum,
                    "shared": rows[site],
                }
            )
    # timings of runs made now; a rerun served from the cache keeps the ones measured before
    timed_keys = {(r["structure"], r["site"]) for r in runs}
    runs += [r for r in previous.get("feff_runs", []) if (r["structure"], r["site"]) not in timed_keys]

    ys = [shared_rows("misc", name).mean(axis=0) for name in REFERENCES]
    spread = {name: float(shared_rows("misc", name).std(axis=0).max()) for name in REFERENCES}
    feffs = [feff[name] for name in REFERENCES]
    lo = min(float(e[0]) for e, _ in feffs)
    e0_range, k_range = (lo - 30.0, lo + 40.0), (0.05, 1.2)
    joint = best_map(ys, feffs, e0_range, k_range)
    alone = {name: best_map([y], [f], e0_range, k_range) for name, y, f in zip(REFERENCES, ys, feffs, strict=True)}

    result: dict = {
        "settings": {
            **{k: v for k, v in vars(settings).items()},
            "workers": 1,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "feff_runs": runs,
        "map": "E(bin) = e0 + k * bin, bins 0..99, E = FEFF photon energy (eV)",
        "joint": {"e0": joint[0], "k": joint[1], "misfit_sum": joint[2]},
        "alone": {n: {"e0": v[0], "k": v[1], "misfit": v[2]} for n, v in alone.items()},
        "shared_row_spread": spread,
        "references": {},
    }
    print("\nmap E(bin) = e0 + k·bin; misfit = 1 − cos² after the best amplitude scale (0 = same shape)")
    print(f"joint:          e0 = {joint[0]:8.2f} eV  k = {joint[1]:.4f} eV/bin  summed misfit {joint[2]:.4f}")
    for name, y, f in zip(REFERENCES, ys, feffs, strict=True):
        e0, k, own = alone[name]
        a, m_joint, r_joint = scale_and_r(y, *f, joint[0], joint[1])
        _, m_own, r_own = scale_and_r(y, *f, e0, k)
        other = [o for o in REFERENCES if o != name][0]
        _, m_other, _ = scale_and_r(y, *f, alone[other][0], alone[other][1])
        print(
            f"{name:9s} alone: e0 = {e0:8.2f} eV  k = {k:.4f} eV/bin  misfit {own:.4f} (r = {r_own:.3f}); "
            f"on the joint map misfit {m_joint:.4f} (r = {r_joint:.3f}), on {other}'s map {m_other:.4f}"
        )
        result["references"][name] = {
            "own_map": {"e0": e0, "k": k, "misfit": m_own, "pearson_r": r_own},
            "joint_map": {"misfit": m_joint, "pearson_r": r_joint, "amplitude": a},
            "misfit_on_other_map": m_other,
            "feff_energy_range": [float(f[0][0]), float(f[0][-1])],
        }
    print("energy of bins 0, 27 (graphite π*), 40 (σ*), 99 on each map (eV):")
    for label, (e0, k) in [("joint", joint[:2])] + [(n, alone[n][:2]) for n in REFERENCES]:
        print(f"  {label:9s}" + "".join(f" {e0 + k * b:7.1f}" for b in (0, 27, 40, 99)))
    if ac_sites:
        result["ac_sites"] = []
        print("a-C sites on the joint map (no fitting); 'others' = mean misfit against the other sites' FEFF spectra:")
        for s in ac_sites:
            a, m, r = scale_and_r(s["shared"], s["energy"], s["mu"], joint[0], joint[1])
            others = [scale_and_r(s["shared"], o["energy"], o["mu"], *joint[:2])[1] for o in ac_sites if o is not s]
            e0, k, own = best_map([s["shared"]], [(s["energy"], s["mu"])], e0_range, k_range)
            print(
                f"  {s['cell']} site {s['site']} ({s['neighbours']} neighbours < {BOND} Å): misfit {m:.4f} "
                f"(r = {r:.3f}; others {np.mean(others):.4f}); own map e0 = {e0:.2f} eV, k = {k:.4f}, misfit {own:.4f}"
            )
            result["ac_sites"].append(
                {
                    "cell": s["cell"],
                    "site": s["site"],
                    "neighbours": s["neighbours"],
                    "misfit": m,
                    "pearson_r": r,
                    "misfit_against_other_sites": float(np.mean(others)),
                    "own_map": {"e0": e0, "k": k, "misfit": own},
                }
            )
    result["bin_energy_eV"] = [round(joint[0] + joint[1] * b, 3) for b in range(100)]

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_rounded(result), indent=1) + "\n")
    print(f"wrote {args.json}")
    plot(args.png, ys, feffs, joint, alone, ac_sites, e0_range, k_range)
    print(f"wrote {args.png}")


def _rounded(value):
    """Floats to 5 significant digits (3 decimals at most) for a readable JSON file."""
    if isinstance(value, float):
        return round(float(f"{value:.5g}"), 3) if abs(value) >= 1 else float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def plot(path: Path, ys, feffs, joint, alone, ac_sites, e0_range, k_range) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(12, 9))
    axes = grid.ravel()
    for ax, name, y, (energy, mu) in zip(axes[:2], REFERENCES, ys, feffs, strict=True):
        a, m, r = scale_and_r(y, energy, mu, joint[0], joint[1])
        ax.plot(energy, mu, color="k", lw=1.4, label="FEFF10 (site average)")
        ax.plot(joint[0] + joint[1] * np.arange(y.size), y / a, "o", ms=3, color="C0", label="shared, joint map")
        e0, k, _ = alone[name]
        a_own = scale_and_r(y, energy, mu, e0, k)[0]
        ax.plot(e0 + k * np.arange(y.size), y / a_own, "-", lw=1, color="C1", label=f"shared, {name}'s own map")
        ax.set_title(f"{name}: misfit {m:.3f}, r = {r:.3f} on the joint map")
        ax.set_xlabel("photon energy (eV, FEFF)")
        ax.set_ylabel("μ (FEFF normalisation; shared scaled to it)")
        ax.legend(fontsize=8)
    e0 = np.linspace(*e0_range, 141)
    k = np.linspace(*k_range, 116)
    total = landscape(ys, feffs, e0, k)
    ax = axes[2]
    image = ax.pcolormesh(k, e0, np.minimum(total, 2.0), shading="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="summed misfit, diamond + graphite (capped at 2)")
    ax.plot(joint[1], joint[0], "r*", ms=12, label="joint best")
    for marker, name in zip(("^", "s"), REFERENCES, strict=True):
        ax.plot(alone[name][1], alone[name][0], marker, mfc="none", mec="r", ms=9, mew=1.5, label=f"{name} alone")
    ax.set_title("misfit of the map E(bin) = e0 + k·bin")
    ax.set_xlabel("k (eV per bin)")
    ax.set_ylabel("e0 (eV)")
    ax.legend(fontsize=8)
    ax = axes[3]
    if not ac_sites:
        ax.axis("off")
    for n, s in enumerate(ac_sites[:6]):
        a, m, _ = scale_and_r(s["shared"], s["energy"], s["mu"], joint[0], joint[1])
        top, shift = float(s["mu"].max()), 1.2 * n
        ax.plot(s["energy"], s["mu"] / top + shift, color="k", lw=1)
        ax.plot(joint[0] + joint[1] * np.arange(100), s["shared"] / a / top + shift, "o", ms=2, color=f"C{n}")
        label = f"{s['cell']} site {s['site']}, {s['neighbours']}-fold: misfit {m:.2f}"
        ax.text(s["energy"][-1], shift + 0.55, label, ha="right", fontsize=7)
    if ac_sites:
        ax.set_title("a-C sites: FEFF (line) and shared row (dots), joint map, no fit")
        ax.set_xlabel("photon energy (eV, FEFF)")
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
