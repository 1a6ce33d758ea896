"""Evaluation metrics (matching, validity, fingerprints, coverage) and the ``atomdiff evaluate`` commands."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.structure import Structure, read_structures, write_structures
from atomdiff.structure.io import load_structures_npz
from atomdiff.tasks.evaluate import (
    composition_fingerprints,
    composition_valid,
    coverage,
    match_scores,
    save_csp_samples,
    structurally_valid,
    structure_fingerprints,
)

CSP_KEYS = {
    "match_rate",
    "match_rate_top1",
    "rmse",
    "rmse_top1",
    "structural_validity",
    "composition_validity",
    "n_structures",
    "samples",
    "steps",
    "sampler",
    "seed",
    "wall_time_s",
    "model",
    "data",
}
DENOVO_KEYS = {
    "structural_validity",
    "composition_validity",
    "validity",
    "coverage_recall",
    "coverage_precision",
    "wdist_density",
    "wdist_num_elements",
    "n_generated",
    "n_test",
}


def _perovskite(a: int, b: int, x: int, lattice: float) -> Structure:
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure([a, b, x, x, x], frac, np.eye(3) * lattice)


def _rocksalt(a: int, b: int, lattice: float) -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([a] * 4 + [b] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * lattice)


def _diamond(lattice: float = 3.567) -> Structure:
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([6] * 8, np.vstack([fcc, fcc + 0.25]), np.eye(3) * lattice)


TESTS = [_perovskite(20, 22, 8, 3.9), _perovskite(38, 22, 8, 3.95), _rocksalt(11, 17, 5.64), _rocksalt(12, 8, 4.21)]


def _scrambled(s: Structure, seed: int = 0) -> Structure:
    """Same atoms and cell, random positions: not the same structure."""
    return s.replace(frac=np.random.default_rng(seed).random((len(s), 3)))


def _relabelled(s: Structure) -> Structure:
    """The same crystal: atoms permuted, shifted rigidly and wrapped."""
    order = np.random.default_rng(1).permutation(len(s))
    return s.replace(numbers=s.numbers[order], frac=(s.frac[order] + [0.13, 0.71, 0.4]) % 1.0)


def test_samples_equal_to_the_test_structures_match_perfectly():
    scores = match_scores(TESTS + [_diamond()], [[t] for t in TESTS + [_diamond()]])
    assert scores.match_rate == scores.match_rate_top1 == 1.0
    assert scores.rmse == pytest.approx(0.0, abs=1e-6)
    same = match_scores(TESTS, [[_relabelled(t)] for t in TESTS])
    assert same.match_rate == 1.0 and same.rmse == pytest.approx(0.0, abs=1e-6)


def test_perov5_test_structures_match_themselves(shared_data):
    tests = read_structures(shared_data / "perov_5" / "test.csv", limit=20)
    scores = match_scores(tests, [[t] for t in tests])
    assert scores.match_rate == scores.match_rate_top1 == 1.0
    assert scores.rmse == pytest.approx(0.0, abs=1e-6)


def test_top_k_counts_any_sample_and_top_1_only_the_first():
    scores = match_scores(TESTS[:2], [[_scrambled(t), t] for t in TESTS[:2]])
    assert scores.match_rate == 1.0 and scores.match_rate_top1 == 0.0
    assert scores.rmse == pytest.approx(0.0, abs=1e-6) and scores.rmse_top1 is None
    half = match_scores(TESTS[:2], [[TESTS[0]], [_scrambled(TESTS[1])]])
    assert half.match_rate == half.match_rate_top1 == 0.5


def test_invalid_samples_never_match():
    scores = match_scores(TESTS[:1], [[TESTS[0]]], valid=[[False]])
    assert scores.match_rate == 0.0 and scores.rmse is None


def test_validity_checks():
    for symbols, ok in [
        ([11, 17], True),  # NaCl
        ([20, 22, 8, 8, 8], True),  # CaTiO3
        ([6, 6], True),  # a pure element
        ([29, 30], True),  # an alloy (metals only, as SMACT)
        ([11, 17, 17], False),  # NaCl2
        ([12, 17], False),  # MgCl
    ]:
        assert composition_valid(symbols) is ok, symbols
    assert all(structurally_valid(t) for t in TESTS)
    close = Structure([6, 6], [[0, 0, 0], [0.05, 0, 0]], np.eye(3) * 5.0)  # 0.25 Å apart
    assert not structurally_valid(close)


def test_fingerprints_are_invariant_to_supercells_and_permutations():
    s = TESTS[2]
    variants = [s, s.repeat((2, 1, 1)), _relabelled(s)]
    struct = structure_fingerprints(variants)
    comp = composition_fingerprints(variants)
    assert struct.shape == (3, 60) and np.allclose(np.linalg.norm(struct, axis=1), 1.0)
    assert np.allclose(struct, struct[0], atol=1e-9) and np.allclose(comp, comp[0])
    assert comp[0, 10] == pytest.approx(0.5) and comp[0, 16] == pytest.approx(0.5)


def test_coverage_of_a_set_by_itself_and_by_something_else():
    assert coverage(TESTS, TESTS) == {"coverage_recall": 1.0, "coverage_precision": 1.0}
    assert coverage([_diamond()], TESTS) == {"coverage_recall": 0.0, "coverage_precision": 0.0}
    strained = [t.replace(cell=t.cell * 1.25) for t in TESTS]
    assert coverage(strained, TESTS)["coverage_recall"] < 1.0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny untrained model folder, CSV of the test structures)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("evaluate")
    model = CrystalDiffusion(CrystalNetConfig(hidden=32, layers=1), DataStatistics.from_structures(TESTS))
    model.save(folder / "model")
    write_structures(TESTS, folder / "test.csv")
    return folder / "model", folder / "test.csv"


def test_evaluate_csp_writes_json(files, tmp_path):
    model, data = files
    out = tmp_path / "csp.json"
    args = ["--model", str(model), "--data", str(data), "--limit", "3", "--samples", "2", "--steps", "3"]
    assert run(["evaluate", "csp", *args, "--batch-size", "4", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert CSP_KEYS <= set(result)
    assert result["n_structures"] == 3 and result["samples"] == 2 and result["steps"] == 3
    assert 0.0 <= result["match_rate_top1"] <= result["match_rate"] <= 1.0


def test_evaluate_csp_samples_stored_then_scored_elsewhere(files, tmp_path):
    """--no-score --save-samples (a GPU machine without pymatgen) then --from-samples gives the scores of a
    direct run with the same seed; stored samples are refused against other data, and options that cannot go
    together are refused."""
    model, data = files
    args = ["--data", str(data), "--limit", "3", "--samples", "2", "--steps", "3", "--batch-size", "4"]
    direct = tmp_path / "direct.json"
    assert run(["evaluate", "csp", "--model", str(model), *args, "-o", str(direct)]) == 0
    stored = tmp_path / "samples.npz"
    assert run(["evaluate", "csp", "--model", str(model), *args, "--no-score", "--save-samples", str(stored)]) == 0
    scored = tmp_path / "scored.json"
    assert (
        run(["evaluate", "csp", "--from-samples", str(stored), "--data", str(data), "--limit", "3", "-o", str(scored)])
        == 0
    )
    a, b = json.loads(direct.read_text()), json.loads(scored.read_text())
    for key in ("match_rate", "match_rate_top1", "rmse", "rmse_top1", "structural_validity", "samples", "steps"):
        assert a[key] == b[key], key
    assert b["samples_file"] == str(stored) and b["model"] == str(model) and b["sample_time_s"] > 0
    groups = load_structures_npz(stored)
    assert len(groups) == 6 and sorted(groups[2].numbers) == sorted(TESTS[1].numbers)
    bare = tmp_path / "bare.npz"  # stored through the Python API with the sample count alone
    save_csp_samples([groups[2 * i : 2 * i + 2] for i in range(3)], bare, {"samples": 2})
    again = tmp_path / "again.json"
    assert (
        run(["evaluate", "csp", "--from-samples", str(bare), "--data", str(data), "--limit", "3", "-o", str(again)])
        == 0
    )
    assert json.loads(again.read_text())["match_rate"] == a["match_rate"]
    other = ["--data", str(data), "-o", str(tmp_path / "x.json")]
    assert run(["evaluate", "csp", "--from-samples", str(stored), *other, "--limit", "2"]) == 2  # other data
    assert run(["evaluate", "csp", "--from-samples", str(data), *other, "--limit", "3"]) == 2  # not a samples file
    assert run(["evaluate", "csp", "--model", str(model), *args, "--no-score"]) == 2  # nothing would be kept
    assert run(["evaluate", "csp", "--model", str(model), *args]) == 2  # scores need --output
    assert run(["evaluate", "csp", *args, "-o", str(tmp_path / "y.json")]) == 2  # neither --model nor samples
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_evaluate_refuses_an_unknown_or_absent_device(files, tmp_path):
    model, data = files
    args = ["--model", str(model), "--data", str(data), "--limit", "1", "--samples", "1", "--steps", "1"]
    assert run(["evaluate", "csp", *args, "--device", "tpu7", "-o", str(tmp_path / "a.json")]) == 2
    if not torch.cuda.is_available():
        assert (
            run(["evaluate", "denovo", *args[:4], "-n", "1", "--device", "cuda", "-o", str(tmp_path / "b.json")]) == 2
        )
    assert not list(tmp_path.iterdir())


def test_evaluate_csp_conditioned_on_matched_and_mismatched_patterns(files, tmp_path):
    from atomdiff.models.pattern_encoder import PatternEncoderConfig

    model, data = files
    args = ["--data", str(data), "--limit", "3", "--samples", "1", "--steps", "3", "--patterns", "matched"]
    assert run(["evaluate", "csp", "--model", str(model), *args, "-o", str(tmp_path / "a.json")]) == 2  # no encoder
    torch.manual_seed(0)
    encoder = PatternEncoderConfig(n_q=256, channels=(8, 8), cond_dim=8)
    net = CrystalNetConfig(hidden=16, layers=1, cond_dim=8, encoder=dataclasses.asdict(encoder))
    CrystalDiffusion(net, DataStatistics.from_structures(TESTS)).save(tmp_path / "cond")
    results = {}
    for kind in ("matched", "mismatched"):
        out = tmp_path / f"{kind}.json"
        argv = [*args[:-1], kind, "--cfg", "2"]
        assert run(["evaluate", "csp", "--model", str(tmp_path / "cond"), *argv, "-o", str(out)]) == 0
        results[kind] = json.loads(out.read_text())
        assert results[kind]["patterns"] == kind and results[kind]["cfg_scale"] == 2.0
    assert CSP_KEYS <= set(results["matched"])


def test_evaluate_denovo_writes_json(files, tmp_path):
    model, data = files
    out = tmp_path / "denovo.json"
    assert (
        run(
            [
                "evaluate",
                "denovo",
                "--model",
                str(model),
                "--data",
                str(data),
                "-n",
                "4",
                "--steps",
                "3",
                "--repulsion",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert DENOVO_KEYS <= set(result) and result["repulsion"] == 2.0
    assert result["n_generated"] == 4 and result["n_test"] == len(TESTS)
    assert 0.0 <= result["validity"] <= min(result["structural_validity"], result["composition_validity"])


def test_evaluate_refuses_a_bad_output_name(files, tmp_path):
    model, data = files
    assert run(["evaluate", "csp", "--model", str(model), "--data", str(data), "-o", str(tmp_path / "r.txt")]) == 2
