"""The shipped crystal models load from the installed package (safetensors + JSON) and sample on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomdiff.diffusion.constraints import CompositionConstraint, parse_formula
from atomdiff.weights import load_crystal_model


@pytest.mark.parametrize("name, formula", [("perov5", "SrTiO3"), ("carbon24", "C8")])
def test_shipped_model_loads_and_samples(name, formula):
    model = load_crystal_model(name)
    out = model.sample(2, CompositionConstraint(formula=parse_formula(formula)), steps=5, seed=0)
    assert [s.formula for s in out] == [out[0].formula] * 2
    for s in out:
        assert np.isfinite(s.frac).all() and s.volume > 1.0


def test_shipped_config_records_training():
    from importlib.resources import files

    for name in ("perov5", "carbon24"):
        config = json.loads((files("atomdiff.weights") / name / "config.json").read_text())
        assert config["kind"] == "crystal_diffusion"
        assert config["training"]["steps"] > 0 and config["training"]["wall_time_s"] > 0
