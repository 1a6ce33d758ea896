"""Per-site spectra stored by the site's environment, so duplicate sites and reruns cost nothing.

The key of a site is a hash of what FEFF sees, independent of where the cluster sits and how it is turned:
the absorber, the sorted (element, distance from the absorber) of every atom, the sorted
(element pair, distance) of every pair of atoms (which fixes the geometry up to rotation, translation and
reflection, none of which changes an orientation-averaged spectrum), every FEFF setting and the FEFF version.
Distances are binned in steps of ``1 / KEY_RESOLUTION`` Å. The bin edges are offset by an irrational
fraction of a step, so that distances with few decimals (``c / 2 = 3.3555`` Å) never sit on an edge, where
rounding noise of a rotation would flip them between bins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from atomdiff.files import atomic_path
from atomdiff.physics.xanes.cluster import Cluster
from atomdiff.physics.xanes.feff import FeffSettings

KEY_VERSION = 1
KEY_RESOLUTION = 1000  # distances in units of 0.001 Å
_KEY_OFFSET = (5**0.5 - 1) / 2  # bin edges at (n - 0.618...) / KEY_RESOLUTION Å


def _feff_version() -> str:
    try:
        return metadata.version("feff10-rs")
    except metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "absent"


def default_cache_dir() -> Path:
    """``$ATOMDIFF_XANES_CACHE``, else ``$XDG_CACHE_HOME/atomdiff/xanes``, else ``~/.cache/atomdiff/xanes``."""
    if os.environ.get("ATOMDIFF_XANES_CACHE"):
        return Path(os.environ["ATOMDIFF_XANES_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "atomdiff" / "xanes"


def _bins(distances: np.ndarray) -> np.ndarray:
    return np.floor(distances * KEY_RESOLUTION + _KEY_OFFSET).astype(np.int64)


def environment_key(cluster: Cluster, settings: FeffSettings) -> str:
    """A hex digest that is the same for two sites whose clusters differ only by a rigid motion."""
    numbers = cluster.numbers.astype(np.int64)
    radial = _bins(cluster.distances)
    shell = sorted(zip(numbers[1:].tolist(), radial[1:].tolist(), strict=True))
    j, k = np.triu_indices(len(cluster), k=1)
    pair_d = _bins(np.linalg.norm(cluster.positions[j] - cluster.positions[k], axis=1))
    z_lo = np.minimum(numbers[j], numbers[k])
    z_hi = np.maximum(numbers[j], numbers[k])
    # the absorber is told apart from other atoms of its element, so pairs with it are flagged
    with_absorber = (j == 0).astype(np.int64)
    pairs = np.stack([with_absorber, z_lo, z_hi, pair_d], axis=1)
    pairs = pairs[np.lexsort(pairs.T[::-1])] if len(pairs) else pairs
    digest = hashlib.sha256()
    header = {
        "version": KEY_VERSION,
        "feff10-rs": _feff_version(),
        "settings": dataclasses.asdict(settings),
        "absorber": int(numbers[0]),
        "shell": shell,
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(pairs, dtype="<i8").tobytes())
    return digest.hexdigest()


class SpectrumCache:
    """Spectra ``(energy_eV, mu)`` as ``<key>.npz`` files in one folder (created when first written)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored spectrum, or ``None`` if absent or unreadable (then it is computed again)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return np.array(data["energy"]), np.array(data["mu"])
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, energy: np.ndarray, mu: np.ndarray) -> None:
        """Store a spectrum; the file appears whole or not at all."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, energy=np.asarray(energy, dtype=np.float64), mu=np.asarray(mu, dtype=np.float64))
