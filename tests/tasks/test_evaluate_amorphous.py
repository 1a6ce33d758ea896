"""The amorphous benchmark functions run end to end on tiny models and data, and report what they promise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.data.spectra import SpectrumLabelled
from atomdiff.diffusion.amorphous import AmorphousDiffusion, SampleOptions, density_cell
from atomdiff.errors import InputError
from atomdiff.models.local import LocalNetConfig
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.structure import Structure
from atomdiff.structure.io import write_structures
from atomdiff.tasks.evaluate_amorphous import (
    density_trend,
    evaluate_test_cells,
    pool_steering,
    steering,
    steering_statistics,
    surrogate_scores,
)


def _models():
    torch.manual_seed(0)
    prior = AmorphousDiffusion(LocalNetConfig(hidden=8, layers=1), elements=[6]).eval()
    xanes = XanesSurrogate(LocalNetConfig(hidden=8, layers=1), 6, 6, [0.5] * 6, [0.1] * 6).eval()
    return prior, xanes


def _cell(seed: int, n: int = 24, density: float = 2.0) -> Structure:
    rng = np.random.default_rng(seed)
    return Structure(np.full(n, 6), rng.random((n, 3)), density_cell(np.full(n, 6), density))


def test_test_cells_steering_and_density_trend():
    prior, xanes = _models()
    rng = np.random.default_rng(0)
    cells = [SpectrumLabelled(_cell(k), np.arange(24), rng.random((24, 6)), f"c{k}") for k in range(2)]
    opts = SampleOptions(steps=3)
    out = evaluate_test_cells(prior, xanes, cells, samples=2, options=opts)
    assert len(out["cells"]) == 2
    for key in ("guided_sp3_error", "unguided_rdf_distance", "guided_spectrum_misfit", "reference_spectrum_misfit"):
        assert np.isfinite(out["summary"][key])
    assert len(out["cells"][0]["guided"]["sp3"]) == 2
    steer = steering(
        prior, xanes, np.zeros(6) + 0.2, np.zeros(6) + 0.8, _cell(5), fractions=(0.0, 1.0), samples=2, options=opts
    )
    assert len(steer["targets"]) == 2 and isinstance(steer["monotonic"], bool)
    assert len(steer["unguided"]["sp3"]) == 2 and len(steer["steps"]) == 1
    trend = density_trend(prior, [_cell(1, density=1.5), _cell(2, density=3.0)], samples=2, options=opts)
    assert [round(p["density"], 2) for p in trend["points"]] == [1.5, 3.0]
    assert trend["mean_abs_sp3_difference"] >= 0


def test_restarts_apply_to_the_guided_samples_only():
    prior, xanes = _models()
    rng = np.random.default_rng(0)
    cells = [SpectrumLabelled(_cell(0), np.arange(24), rng.random((24, 6)), "c0")]
    once, again = (
        evaluate_test_cells(prior, xanes, cells, samples=2, options=SampleOptions(steps=3, restarts=r))["cells"][0]
        for r in (0, 1)
    )
    assert once["unguided"] == {**again["unguided"], "seconds": once["unguided"]["seconds"]}
    assert once["guided"]["spectrum_misfit"] != again["guided"]["spectrum_misfit"]
    refs = [_cell(1, density=1.5)]
    plain, restarted = (
        density_trend(prior, refs, samples=2, options=SampleOptions(steps=3, restarts=r))["points"] for r in (0, 1)
    )
    assert plain == restarted


def test_surrogate_scores_are_perfect_on_its_own_predictions():
    _, xanes = _models()
    s = _cell(3)
    from atomdiff.structure import StructureBatch

    with torch.no_grad():
        idx, spectra = xanes.per_atom(StructureBatch.from_structures([s], dtype=torch.float32))
    item = SpectrumLabelled(s, idx.numpy(), spectra.double().numpy(), "own")
    noisy = SpectrumLabelled(s, idx.numpy(), spectra.double().numpy() + 0.05, "shifted")
    scores = surrogate_scores(xanes, [item, noisy])
    assert scores["per_structure"][0]["mse"] < 1e-10
    assert abs(scores["per_structure"][1]["mse"] - 0.0025) < 1e-6
    assert scores["per_atom_r2"] < 1.0


def test_evaluate_xanes_cli(tmp_path):
    _, xanes = _models()
    xanes.save(tmp_path / "s")
    root = tmp_path / "data"
    for split in ("test",):
        (root / "poscar" / split).mkdir(parents=True)
        (root / "xanes" / split).mkdir(parents=True)
        for k in range(2):
            write_structures([_cell(k)], root / "poscar" / split / f"c{k}.vasp", format="poscar")
            np.savetxt(root / "xanes" / split / f"c{k}.txt", np.random.default_rng(k).random((24, 6)))
    out = tmp_path / "r.json"
    assert run(["evaluate", "xanes", "--data", str(root), "--surrogate", str(tmp_path / "s"), "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["structures"] == 2 and result["atoms"] == 48


def test_evaluate_amorphous_cli_runs_the_test_cells_with_restarts(tmp_path):
    prior, xanes = _models()
    prior.save(tmp_path / "p")
    xanes.save(tmp_path / "s")
    root = tmp_path / "data"
    (root / "poscar" / "test").mkdir(parents=True)
    (root / "xanes" / "test").mkdir(parents=True)
    for k in range(2):
        write_structures([_cell(k)], root / "poscar" / "test" / f"c{k}.vasp", format="poscar")
        np.savetxt(root / "xanes" / "test" / f"c{k}.txt", np.random.default_rng(k).random((24, 6)))
    out = tmp_path / "r.json"
    args = ["evaluate", "amorphous", "--data", str(root), "--model", str(tmp_path / "p"), "--surrogate"]
    args += [str(tmp_path / "s"), "--experiments", "test", "--samples", "1", "--steps", "2", "--restarts", "1"]
    assert run([*args, "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["restarts"] == 1 and len(result["test_cells"]["cells"]) == 2
    assert np.isfinite(result["test_cells"]["summary"]["guided_spectrum_misfit"])
    assert (result["restart_sigma"], result["restart_steps"]) == (0.2, 20)  # the defaults, as `atomdiff amorphous`
    args[-2:] = ["--restart-steps", "2"]  # no --restarts: GUIDED_RESTARTS
    assert run([*args, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["restarts"] == 2


def test_the_steering_experiment_has_its_own_samples_and_strength(tmp_path):
    """``--steer-samples`` and ``--steer-guidance`` (defaults STEER_SAMPLES = 20 and STEER_GUIDANCE = 2) set the
    steering experiment's samples per target and strength, apart from the test cells' ``--samples``/``--guidance``."""
    from atomdiff.tasks.evaluate_amorphous import STEER_GUIDANCE, STEER_SAMPLES

    prior, xanes = _models()
    prior.save(tmp_path / "p")
    xanes.save(tmp_path / "s")
    root = tmp_path / "data"
    for folder in ("poscar/test", "xanes/test", "xanes/misc"):
        (root / folder).mkdir(parents=True)
    write_structures([_cell(0)], root / "poscar" / "test" / "c0.vasp", format="poscar")
    np.savetxt(root / "xanes" / "test" / "c0.txt", np.random.default_rng(0).random((24, 6)))
    header = ",".join(map(str, range(6)))
    for name, level in (("graphite", 0.2), ("diamond", 0.8)):
        np.savetxt(root / "xanes" / "misc" / f"{name}.csv", np.full((2, 6), level), delimiter=",", header=header)
    out = tmp_path / "r.json"
    args = ["evaluate", "amorphous", "--data", str(root), "--model", str(tmp_path / "p"), "--surrogate"]
    args += [str(tmp_path / "s"), "--experiments", "steering", "--steps", "2", "--restarts", "0", "--samples", "1"]
    assert run([*args, "--steer-samples", "3", "--steer-guidance", "0.5", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["steer_samples"], result["steer_guidance"], result["samples"]) == (3, 0.5, 1)
    assert result["guidance_clip"] == 5.0
    assert [len(t["sp3"]) for t in result["steering"]["targets"]] == [3] * 5
    assert (STEER_SAMPLES, STEER_GUIDANCE) == (20, 2.0)
    # two runs pooled: every target has both runs' samples, and the pool's trend statistics
    assert run([*args, "--steer-samples", "2", "--seed", "1", "-o", str(tmp_path / "r1.json")]) == 0
    assert run(["evaluate", "steering-pool", str(out), str(tmp_path / "r1.json"), "-o", str(tmp_path / "p.json")]) == 0
    pooled = json.loads((tmp_path / "p.json").read_text())
    assert [len(t["sp3"]) for t in pooled["targets"]] == [5] * 5 and len(pooled["unguided"]["sp3"]) == 5
    assert pooled["runs"] == 2 and len(pooled["steps"]) == 4 and "rank_correlation" in pooled
    (tmp_path / "bad.json").write_text('{"test_cells": {}}')
    assert run(["evaluate", "steering-pool", str(tmp_path / "bad.json"), "-o", str(tmp_path / "q.json")]) == 2
    assert not (tmp_path / "q.json").exists()


def _rows(*samples: list[float]) -> list[dict]:
    return [{"fraction_high": k / 4, "sp3": list(v), "spectrum_misfit": 0.1} for k, v in enumerate(samples)]


def test_steering_statistics_tell_a_fall_from_noise():
    """Means that dip by less than two standard errors are not monotonic but fall by chance; a clear fall is
    flagged; the rank correlation follows the trend."""
    rng = np.random.default_rng(0)
    noisy = [list(m + 0.04 * rng.standard_normal(20)) for m in (0.27, 0.31, 0.34, 0.36, 0.36)]
    noisy[4] = list(np.asarray(noisy[3]) - 0.004)  # the same scatter, 0.004 lower
    stats = steering_statistics(_rows(*noisy))
    assert not stats["monotonic"] and not stats["significant_fall"]
    assert stats["steps"][3]["difference"] == pytest.approx(-0.004) and stats["steps"][3]["standard_error"] > 0.01
    assert stats["rank_correlation"] > 0.5 and stats["rank_p_value"] < 1e-6
    falling = steering_statistics(_rows([0.4, 0.41, 0.39], [0.3, 0.31, 0.29]))
    assert falling["significant_fall"] and falling["rank_correlation"] < 0
    assert steering_statistics(_rows([0.3, 0.31], [0.32, 0.33]))["monotonic"]


def test_pooled_steering_runs_keep_every_sample_and_refuse_other_targets():
    one = {"density": 2.5, "atoms": 216, "fraction": "sp3", "targets": _rows([0.30, 0.32], [0.35, 0.37])}
    two = {"density": 2.5, "atoms": 216, "fraction": "sp3", "targets": _rows([0.28], [0.36])}
    pooled = pool_steering([one, two])
    assert [t["sp3"] for t in pooled["targets"]] == [[0.30, 0.32, 0.28], [0.35, 0.37, 0.36]]
    assert pooled["targets"][0]["sp3_mean"] == pytest.approx(0.3)
    assert pooled["runs"] == 2 and pooled["runs_monotonic"] == 2 and pooled["monotonic"]
    with pytest.raises(InputError, match="density"):
        pool_steering([one, {**two, "density": 3.0}])
    with pytest.raises(InputError, match="nothing to pool"):
        pool_steering([])


def test_evaluate_amorphous_rejects_unknown_experiments(tmp_path, capsys):
    assert (
        run(
            [
                "evaluate",
                "amorphous",
                "--data",
                str(tmp_path),
                "-o",
                str(tmp_path / "r.json"),
                "--experiments",
                "test,magic",
            ]
        )
        == 2
    )
    assert "--experiments" in capsys.readouterr().err


def test_a_silicon_test_set_is_scored_by_its_four_fold_fraction():
    """Cells of another element than carbon: 3-, 4-, 5-fold fractions (Si–Si bonds < 2.85 Å), the 4-fold one's
    error as the headline, in the test-cell, steering and density experiments."""
    torch.manual_seed(0)
    prior = AmorphousDiffusion(LocalNetConfig(hidden=8, layers=1, cutoff=4.5), elements=[14]).eval()
    xanes = XanesSurrogate(LocalNetConfig(hidden=8, layers=1, cutoff=4.5), 6, 14, [0.5] * 6, [0.1] * 6).eval()
    rng = np.random.default_rng(1)

    def cell(seed: int, density: float = 2.3) -> Structure:
        n = 20
        return Structure(
            np.full(n, 14), np.random.default_rng(seed).random((n, 3)), density_cell(np.full(n, 14), density)
        )

    cells = [SpectrumLabelled(cell(k), np.arange(0, 20, 4), rng.random((5, 6)), f"si{k}") for k in range(2)]
    opts = SampleOptions(steps=3, min_distance=1.7)
    out = evaluate_test_cells(prior, xanes, cells, samples=2, options=opts)
    assert set(out["cells"][0]["guided"]) >= {"cn3", "cn4", "cn5", "cn4_error"}
    assert np.isfinite(out["summary"]["guided_cn4_error"]) and "guided_sp3_error" not in out["summary"]
    steer = steering(
        prior, xanes, np.full(6, 0.4), np.full(6, 0.6), cell(7), fractions=(0.0, 1.0), samples=2, options=opts
    )
    assert steer["fraction"] == "cn4" and "cn4_mean" in steer["targets"][0]
    trend = density_trend(prior, [cell(3, 2.0), cell(4, 2.6)], samples=2, options=opts)
    assert trend["fraction"] == "cn4" and trend["mean_abs_cn4_difference"] >= 0
