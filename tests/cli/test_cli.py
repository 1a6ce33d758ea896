"""The command line: help everywhere, agreement with pymatgen, seeds, and clean failures (exit 2)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from pymatgen.analysis.diffraction.xrd import XRDCalculator

from atomdiff.cli.main import run
from atomdiff.data.patterns import read_pattern, write_pattern
from atomdiff.errors import InputError
from atomdiff.examples import example_path
from atomdiff.structure import read_structures, write_structures

KESTERITE = str(example_path("kesterite_Cu2ZnSnS4.cif"))
COMMANDS = [
    [],
    ["simulate"],
    ["simulate", "xrd"],
    ["simulate", "neutron"],
    ["simulate", "pdf"],
    ["simulate", "sq"],
    ["analyze"],
    ["compare"],
    ["demo"],
    ["index"],
    ["refine"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "atomdiff")
def test_help_on_every_command(command, capsys):
    assert run([*command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_simulate_xrd_peaks_agree_with_pymatgen(shared_data, tmp_path):
    s = read_structures(shared_data / "perov_5" / "test.csv", limit=1)[0]
    cif = tmp_path / "perov.cif"
    write_structures(s, cif)
    out, peaks = tmp_path / "p.xy", tmp_path / "peaks.csv"
    assert (
        run(
            [
                "simulate",
                "xrd",
                str(cif),
                "-o",
                str(out),
                "--peaks",
                str(peaks),
                "--form-factors",
                "pymatgen",
                "--start",
                "5",
                "--stop",
                "90.5",
            ]
        )
        == 0
    )
    with open(peaks, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["two_theta", "d_spacing", "h", "k", "l", "multiplicity", "intensity"]
    assert max(float(r["intensity"]) for r in rows) == pytest.approx(100.0)
    tth = np.array([float(r["two_theta"]) for r in rows])
    inten = np.array([float(r["intensity"]) for r in rows])
    ref = XRDCalculator("CuKa1").get_pattern(read_structures(cif)[0].to_pymatgen(), two_theta_range=(5, 90))
    for x, y in zip(ref.x, ref.y, strict=True):
        if y > 1:
            near = np.abs(tth - x) < 0.005
            assert near.any() and np.min(np.abs(inten[near] - y)) < 2
    pattern = read_pattern(out)
    assert pattern.x[0] == pytest.approx(5.0) and pattern.y.max() == pytest.approx(100.0)


def test_simulate_all_kinds_with_plots(tmp_path):
    for kind, extra in (
        ("xrd", ["--axis", "q", "--wavelength", "0.4579"]),
        ("neutron", []),
        ("pdf", ["--qmax", "20"]),
        ("sq", ["--quantity", "F(Q)"]),
    ):
        out, png = tmp_path / f"{kind}.csv", tmp_path / f"{kind}.png"
        assert run(["simulate", kind, KESTERITE, "-o", str(out), "--plot", str(png), *extra]) == 0, kind
        assert png.stat().st_size > 10_000
        p = read_pattern(out)
        assert np.isfinite(p.y).all() and len(p.x) > 100


def test_same_seed_same_noise(tmp_path):
    outs = []
    for name, seed in (("a.xye", 3), ("b.xye", 3), ("c.xye", 4)):
        assert (
            run(["simulate", "xrd", KESTERITE, "-o", str(tmp_path / name), "--counts", "1000", "--seed", str(seed)])
            == 0
        )
        outs.append(read_pattern(tmp_path / name).y)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_background_is_in_the_output_units(tmp_path):
    """--background 300 with --counts 10000: about 300 counts between the peaks; without --counts, 3 % of the
    strongest peak."""
    noisy, clean = tmp_path / "n.xye", tmp_path / "c.xy"
    args = ["simulate", "xrd", KESTERITE, "--start", "10", "--stop", "80", "--background", "300,-50"]
    assert run([*args, "-o", str(noisy), "--counts", "10000"]) == 0
    assert (
        run(["simulate", "xrd", KESTERITE, "-o", str(clean), "--start", "10", "--stop", "80", "--background", "3"]) == 0
    )
    y = read_pattern(noisy).y
    assert 300 < np.median(y[:200]) < 400  # T1 = -1 at the low end: 300 + 50
    assert 200 < np.median(y[-200:]) < 300
    assert 2.9 < np.percentile(read_pattern(clean).y, 20) < 3.2


def test_analyze_writes_json_and_plots(tmp_path, capsys):
    assert run(["analyze", KESTERITE, "--json", str(tmp_path / "d.json"), "--plots", str(tmp_path / "plots")]) == 0
    assert "density_g_cm3" in (tmp_path / "d.json").read_text()
    assert (tmp_path / "plots" / "rdf.png").exists() and (tmp_path / "plots" / "bond_angles.png").exists()


def test_compare_recovers_the_right_structure(tmp_path, capsys):
    measured = tmp_path / "m.xye"
    assert run(["simulate", "xrd", KESTERITE, "-o", str(measured), "--counts", "5000", "--seed", "1"]) == 0
    assert (
        run(
            ["compare", str(measured), KESTERITE, "--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")]
        )
        == 0
    )
    import json

    result = json.loads((tmp_path / "c.json").read_text())
    assert result["chi2"] < 1.3 and result["cosine"] > 0.99


def test_refine_ranks_the_right_structure_first_and_rules_the_wrong_one_out(tmp_path, capsys):
    """SrTiO3 and the same cell with Sr and Ti exchanged, refined in Pm-3m against a counted SrTiO3 pattern."""
    from atomdiff.structure import Structure

    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    truth = Structure([38, 22, 8, 8, 8], frac, np.eye(3) * 3.905)
    write_structures([truth], tmp_path / "srtio3.cif")
    write_structures([truth.replace(numbers=[22, 38, 8, 8, 8])], tmp_path / "swapped.cif")
    measured = tmp_path / "m.xye"
    assert run(["simulate", "xrd", str(tmp_path / "srtio3.cif"), "-o", str(measured), "--counts", "20000"]) == 0
    # start a little off: a 1 % larger cell
    write_structures([truth.replace(cell=truth.cell * 1.01)], tmp_path / "srtio3.cif")
    out = tmp_path / "refined"
    args = ["refine", str(measured), str(tmp_path / "swapped.cif"), str(tmp_path / "srtio3.cif"), "-o", str(out)]
    assert run(args) == 0
    assert "Rexp" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "refined.csv")))
    assert [r["source"] for r in rows] == ["srtio3.cif", "swapped.cif"]
    assert rows[0]["space_group"] == rows[1]["space_group"] == "Pm-3m (221)"
    assert float(rows[0]["a"]) == pytest.approx(3.905, abs=2e-3)
    assert float(rows[0]["delta_aic"]) == 0 and float(rows[1]["delta_aic"]) > 10
    assert read_structures(out / rows[0]["file"])[0].formula == "O3SrTi"
    assert (out / "01_fit.png").exists() and (out / "02_fit.png").exists()
    page = (out / "report.html").read_text()
    assert "the data rule it out beside rank 1" in page and "<canvas" in page and "Rexp" in page
    # P1 on request: every coordinate and strain free
    assert run([*args[:-1], str(tmp_path / "p1"), "--symprec", "0"]) == 0
    p1 = list(csv.DictReader(open(tmp_path / "p1" / "refined.csv")))
    assert int(p1[0]["n_parameters"]) == int(rows[0]["n_parameters"]) + 5 + 15
    # a structure file that is not there: a clear error, nothing written
    assert run(["refine", str(measured), str(tmp_path / "none.cif"), "-o", str(tmp_path / "x")]) == 2
    assert "none.cif" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_index_writes_peaks_and_cells(tmp_path, capsys):
    """The bundled kesterite lab pattern (Cu Kα1+Kα2) indexes as its body-centred tetragonal cell."""
    pattern = str(example_path("kesterite_CuKa.xye"))
    assert run(["index", pattern, "--wavelength", "CuKa", "--top", "3", "-o", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert "tetragonal" in out and "peaks in kesterite_CuKa.xye" in out
    rows = list(csv.DictReader(open(tmp_path / "idx" / "cells.csv")))
    assert 1 <= len(rows) <= 3 and (rows[0]["system"], rows[0]["centring"]) == ("tetragonal", "I")
    assert float(rows[0]["a"]) == pytest.approx(5.427, rel=1e-3) and float(rows[0]["c"]) == pytest.approx(
        10.871, rel=1e-3
    )
    peaks = list(csv.DictReader(open(tmp_path / "idx" / "peaks.csv")))
    assert len(peaks) >= 20 and set(peaks[0]) == {"x", "d", "height", "fwhm", "sigma_x"}
    # a pattern with too few peaks: a clear error naming the file
    flat = tmp_path / "flat.xy"
    flat.write_text("\n".join(f"{10 + 0.02 * i:.2f} {100 + (i % 3)}" for i in range(500)))
    assert run(["index", str(flat)]) == 2
    assert "flat.xy" in capsys.readouterr().err
    # only the systems asked for: cubic cannot index kesterite's lines
    assert run(["index", pattern, "--wavelength", "CuKa", "--systems", "cubic"]) == 0
    assert "no cell of the searched systems (cubic)" in capsys.readouterr().out
    assert run(["index", pattern, "--systems", "cubic,trigonal"]) == 2
    assert "unknown crystal system 'trigonal'" in capsys.readouterr().err


def test_demo(tmp_path):
    assert run(["demo", "--quick", "-o", str(tmp_path / "demo")]) == 0
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"kesterite_CuKa.xye", "kesterite_peaks.csv", "kesterite_CuKa.png", "kesterite_pdf.xy"} <= names


# --- bad input: one clear line, exit code 2, no traceback, nothing left behind --------------------------
def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _truncated_cif(tmp_path):
    text = example_path("kesterite_Cu2ZnSnS4.cif").read_text().rstrip("\n").splitlines()
    return _write(tmp_path, "cut.cif", "\n".join(text[:-1] + [text[-1].split()[0]]) + "\n")


BAD = {
    "truncated cif": (lambda t: ["simulate", "xrd", _truncated_cif(t)], "cut.cif, line"),
    "not a cif": (lambda t: ["simulate", "xrd", _write(t, "x.cif", "hello\n")], "x.cif"),
    "unknown element": (
        lambda t: [
            "simulate",
            "xrd",
            _write(
                t,
                "u.cif",
                example_path("kesterite_Cu2ZnSnS4.cif").read_text().replace(" Zn ", " Qq ").replace("Zn1", "Qq1"),
            ),
        ],
        "u.cif",
    ),
    "wavelength <= 0": (lambda t: ["simulate", "xrd", KESTERITE, "--wavelength", "0"], "wavelength"),
    "unknown wavelength": (lambda t: ["simulate", "xrd", KESTERITE, "--wavelength", "CuKq"], "unknown wavelength"),
    "2theta above 180": (lambda t: ["simulate", "xrd", KESTERITE, "--stop", "185"], "< 180 degrees"),
    "2theta below 0": (lambda t: ["simulate", "xrd", KESTERITE, "--start", "-5"], "start < stop"),
    "bad background": (lambda t: ["simulate", "xrd", KESTERITE, "--background", "1,x"], "--background"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_structure_or_parameter(case, tmp_path, capsys):
    make, message = BAD[case]
    out = tmp_path / "out.xy"
    assert run([*make(tmp_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    assert not out.exists()


PATTERNS = {
    "text in numbers": ("10 5\n10.1 6\n10.2 x7\n", "line 3"),
    "nan": ("10 5\n10.1 nan\n10.2 7\n", "line 2"),
    "infinite": ("10 5\n10.1 inf\n10.2 7\n", "line 2"),
    "non-monotonic": ("10 5\n10.2 6\n10.1 7\n", "line 3"),
    "empty": ("# nothing here\n", "bad.xy"),
}


@pytest.mark.parametrize("case", list(PATTERNS), ids=list(PATTERNS))
def test_bad_pattern_files(case, tmp_path, capsys):
    text, message = PATTERNS[case]
    path = _write(tmp_path, "bad.xy", text)
    keep = tmp_path / "fit.png"
    keep.write_bytes(b"old")
    assert run(["compare", path, KESTERITE, "--plot", str(keep)]) == 2
    err = capsys.readouterr().err
    assert "bad.xy" in err and message in err and "Traceback" not in err
    assert keep.read_bytes() == b"old"


def test_failure_keeps_existing_output(tmp_path, capsys):
    out = tmp_path / "out.xy"
    out.write_text("previous result\n")
    assert run(["simulate", "xrd", _truncated_cif(tmp_path), "-o", str(out)]) == 2
    assert out.read_text() == "previous result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.cif", "out.xy"]


def test_total_scattering_curves_write_in_their_own_formats(tmp_path):
    """`simulate pdf -o X.gr` and `simulate sq -o X.sq` / `--quantity F(Q) -o X.fq` write files that read back
    on the right axis with the same values as a .dat; a curve in the other format's file is refused."""
    for kind, suffix, extra, axis in (
        ("pdf", ".gr", ["--stop", "8"], "r"),
        ("sq", ".sq", ["--stop", "10"], "q"),
        ("sq", ".fq", ["--stop", "10", "--quantity", "F(Q)"], "q"),
    ):
        own, plain = tmp_path / f"{kind}{suffix}", tmp_path / f"{kind}{suffix[1:]}.dat"
        for out in (own, plain):
            assert run(["simulate", kind, KESTERITE, "-o", str(out), *extra]) == 0, out
        got, ref = read_pattern(own), read_pattern(plain, axis=axis)
        assert got.axis == axis
        np.testing.assert_array_equal(got.x, ref.x)
        np.testing.assert_array_equal(got.y, ref.y)
    assert run(["simulate", "sq", KESTERITE, "-o", str(tmp_path / "s.fq")]) == 2  # S(Q) is not F(Q)
    assert run(["simulate", "pdf", KESTERITE, "-o", str(tmp_path / "g.sq")]) == 2
    with pytest.raises(InputError, match="r axis"):
        write_pattern(tmp_path / "x.gr", [1.0, 2.0], [0.0, 1.0], axis="q")
