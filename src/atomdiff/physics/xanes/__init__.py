"""X-ray absorption near-edge spectra (XANES) from first principles with FEFF10 (through feff10-rs).

:func:`simulate_xanes` cuts a cluster around each absorbing site of a periodic structure, runs FEFF on it
(in parallel, and only for environments not already in the cache), puts the per-site spectra on one energy
grid and averages them.
"""

from atomdiff.physics.xanes.cache import SpectrumCache, default_cache_dir, environment_key
from atomdiff.physics.xanes.cluster import Cluster, cut_clusters
from atomdiff.physics.xanes.feff import EDGES, FeffRunError, FeffSettings, feff_input, read_xmu, run_feff
from atomdiff.physics.xanes.spectra import (
    SiteFailure,
    XanesResult,
    common_grid,
    parse_sites,
    select_sites,
    simulate_xanes,
)
from atomdiff.physics.xanes.table import read_xanes_csv, write_xanes_csv

__all__ = [
    "EDGES",
    "Cluster",
    "FeffRunError",
    "FeffSettings",
    "SiteFailure",
    "SpectrumCache",
    "XanesResult",
    "common_grid",
    "cut_clusters",
    "default_cache_dir",
    "environment_key",
    "feff_input",
    "parse_sites",
    "read_xanes_csv",
    "read_xmu",
    "run_feff",
    "select_sites",
    "simulate_xanes",
    "write_xanes_csv",
]
