"""The shipped crystal models load from the installed package (safetensors + JSON) and sample on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomdiff.diffusion.constraints import CompositionConstraint, parse_formula
from atomdiff.weights import load_crystal_model


@pytest.mark.parametrize(
    "name, formula",
    [("perov5", "SrTiO3"), ("carbon24", "C8"), ("perov5_pattern", "SrTiO3"), ("chalcogenide_pattern", "Cu2ZnSnS4")],
)
def test_shipped_model_loads_and_samples(name, formula):
    model = load_crystal_model(name)
    out = model.sample(2, CompositionConstraint(formula=parse_formula(formula)), steps=5, seed=0)
    assert [s.formula for s in out] == [out[0].formula] * 2
    for s in out:
        assert np.isfinite(s.frac).all() and s.volume > 1.0


def test_shipped_config_records_training():
    from importlib.resources import files

    for name in ("perov5", "carbon24", "perov5_pattern", "chalcogenide_pattern"):
        config = json.loads((files("atomdiff.weights") / name / "config.json").read_text())
        assert config["kind"] == "crystal_diffusion"
        assert config["training"]["steps"] > 0 and config["training"]["wall_time_s"] > 0


def test_shipped_pattern_model_reads_the_lattice_from_the_pattern():
    import torch

    from atomdiff.data.generate.patterns import simulate_training_patterns
    from atomdiff.structure import Structure

    torch.set_num_threads(1)
    model = load_crystal_model("perov5_pattern")
    assert model.conditioned
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    edges = []
    for a in (3.75, 3.905, 4.1):
        truth = Structure([38, 22, 8, 8, 8], frac, np.eye(3) * a)
        feats, rads = simulate_training_patterns([truth], 1, model.net.pattern_encoder.config, seed=0)
        with torch.no_grad():
            cond = model.encode_patterns(torch.as_tensor(feats[:, 0]), torch.as_tensor(rads[:, 0])).double()
        out = model.sample(3, steps=50, seed=0, numbers=[truth.numbers] * 3, condition=cond.expand(3, -1), cfg_scale=1)
        edge = float(np.mean([abs(np.linalg.det(s.cell)) ** (1 / 3) for s in out]))
        assert abs(edge - a) < 0.12, (a, edge)  # the cell comes from the pattern (SrTiO3 itself is 3.905 Å)
        edges.append(edge)
    assert edges == sorted(edges)


def test_solve_picks_the_pattern_conditioned_model_where_it_covers_the_chemistry():
    from atomdiff.weights import choose_crystal_model

    assert choose_crystal_model({38, 22, 8}) == "perov5_pattern"
    assert choose_crystal_model({6}) == "carbon24"
    assert choose_crystal_model({38, 22, 8, 118}, formula_given=True) == "perov5_pattern"
    assert choose_crystal_model({29, 30, 50, 16}) == "chalcogenide_pattern"


def test_the_chalcogenide_model_proposes_kesterite_cells_for_its_element_list():
    from atomdiff.diffusion.constraints import CompositionConstraint

    model = load_crystal_model("chalcogenide_pattern")
    listed = CompositionConstraint(required={29, 30, 50, 16}).only_required(set(model.stats.elements))
    assert listed.cell_proposals(model.stats.cells) == [{29: 2, 16: 4, 50: 1, 30: 1}, {29: 4, 16: 8, 50: 2, 30: 2}]
