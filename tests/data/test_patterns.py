"""Tests of reading and writing measured patterns (atomdiff.data.patterns)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.data import patterns
from atomdiff.data.patterns import MeasuredPattern, read_pattern, write_pattern
from atomdiff.errors import InputError

X = np.array([10.0, 10.02, 10.04, 10.06, 10.08]) + 1e-13
Y = np.array([1.0 / 3.0, 250.5, 1234.0, 17.25, 0.0])
S = np.sqrt(Y) + 0.1


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _raises(path, *fragments: str, axis: str | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        read_pattern(path, axis=axis)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message
    return info.value


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".xy", ".xye", ".dat", ".txt", ".csv"])
@pytest.mark.parametrize("with_sigma", [False, True])
def test_round_trip(tmp_path, suffix, with_sigma):
    path = tmp_path / f"pattern{suffix}"
    sigma = S if with_sigma else None
    write_pattern(path, X, Y, sigma, axis="q", header="sample: Si\ncollected 2024")
    got = read_pattern(path)
    np.testing.assert_array_equal(got.x, X)  # full precision
    np.testing.assert_array_equal(got.y, Y)
    if with_sigma:
        np.testing.assert_array_equal(got.sigma, S)
    else:
        assert got.sigma is None
    assert got.axis == "q"
    assert got.source == str(path)
    assert got.wavelength is None
    assert "sample: Si" in got.meta["comments"]
    assert got.meta["columns"][:2] == ["q", "intensity"]


def test_written_text_layout(tmp_path):
    path = tmp_path / "a.xy"
    write_pattern(path, [1.0, 2.0], [3.0, 4.5])
    assert path.read_text().splitlines() == ["# two_theta intensity", "1.0 3.0", "2.0 4.5"]
    path = tmp_path / "a.csv"
    write_pattern(path, [1.0, 2.0], [3.0, 4.5], [0.5, 0.25])
    assert path.read_text().splitlines() == ["two_theta,intensity,sigma", "1.0,3.0,0.5", "2.0,4.5,0.25"]


def test_comments_blank_lines_and_separators(tmp_path):
    text = "! instrument X\n% more\n; and more\n// last\n\n# r G\n1.0, 2.0\n  1.5\t-3e-1\n2.0 4\n"
    got = read_pattern(_write(tmp_path, "g.dat", text))
    np.testing.assert_array_equal(got.x, [1.0, 1.5, 2.0])
    np.testing.assert_array_equal(got.y, [2.0, -0.3, 4.0])
    assert got.axis == "r"  # from the "# r G" comment naming the columns
    assert got.meta["comments"] == ["instrument X", "more", "and more", "last", "r G"]


def test_plain_header_line_and_default_axis(tmp_path):
    got = read_pattern(_write(tmp_path, "p.xye", "# no column names here\nangle counts esd\n5 1 1\n6 4 2\n"))
    assert got.axis == "two_theta"
    np.testing.assert_array_equal(got.sigma, [1.0, 2.0])
    got = read_pattern(_write(tmp_path, "n.xy", "5 1\n6 4\n"))
    assert got.axis == "two_theta" and got.sigma is None and "columns" not in got.meta


def test_axis_argument_overrides_file(tmp_path):
    path = _write(tmp_path, "o.xy", "# 2theta I\n5 1\n6 4\n")
    assert read_pattern(path).axis == "two_theta"
    assert read_pattern(path, axis="energy").axis == "energy"
    _raises(path, "unknown axis", axis="degrees")


@pytest.mark.parametrize(
    ("header", "axis"),
    [
        ("2Theta (deg),Counts", "two_theta"),
        ("tth,y", "two_theta"),
        ("Q [1/A],intensity", "q"),
        ("r,G(r)", "r"),
        ('"energy","counts"', "energy"),
        ("x,y", "two_theta"),
    ],
)
def test_csv_header_names(tmp_path, header, axis):
    got = read_pattern(_write(tmp_path, "h.csv", f"{header}\n1.5,10\n2.5,20\n"))
    assert got.axis == axis
    np.testing.assert_array_equal(got.x, [1.5, 2.5])
    np.testing.assert_array_equal(got.y, [10.0, 20.0])


def test_csv_columns_found_by_name(tmp_path):
    text = "esd,counts,background,two_theta\n1,4,0.5,20\n2,9,0.5,21\n"
    got = read_pattern(_write(tmp_path, "c.csv", text))
    np.testing.assert_array_equal(got.x, [20.0, 21.0])
    np.testing.assert_array_equal(got.y, [4.0, 9.0])
    np.testing.assert_array_equal(got.sigma, [1.0, 2.0])


def test_to_pattern(tmp_path):
    pattern = MeasuredPattern(X, Y, S, axis="q").to_pattern()
    assert pattern.x.shape == (5,) and pattern.y.shape == (1, 5)
    assert pattern.x.dtype == torch.float64 and pattern.axis == "q" and pattern.quantity == "intensity"
    assert torch.equal(pattern.y[0], torch.as_tensor(Y))
    assert MeasuredPattern(X, Y).to_pattern(torch.float32).y.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- xrdml

XRDML = """<?xml version="1.0" encoding="UTF-8"?>
<xrdMeasurements xmlns="http://www.xrdml.com/XRDMeasurement/1.5"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" status="Completed">
  <sample type="To be analyzed"><id>Si-640f</id></sample>
  <xrdMeasurement measurementType="Scan" status="Completed" sampleMode="Reflection">
    <usedWavelength intended="K-Alpha 1">
      <kAlpha1 unit="Angstrom">1.5405980</kAlpha1>
      <kAlpha2 unit="Angstrom">1.5444260</kAlpha2>
      <kBeta unit="Angstrom">1.3922500</kBeta>
      <ratioKAlpha2KAlpha1>0.5000</ratioKAlpha2KAlpha1>
    </usedWavelength>
    <scan appendNumber="0" mode="Continuous" scanAxis="Gonio" status="Completed">
      <header><startTimeStamp>2023-05-04T10:00:00+02:00</startTimeStamp></header>
      <dataPoints>
        {positions}
        <positions axis="Omega" unit="deg">
          <startPosition>5.0</startPosition>
          <endPosition>35.0</endPosition>
        </positions>
        <commonCountingTime unit="seconds">0.50</commonCountingTime>
        <beamAttenuationFactors>1 1 1 1 1</beamAttenuationFactors>
        <{tag} unit="counts">{values}</{tag}>
      </dataPoints>
    </scan>
  </xrdMeasurement>
</xrdMeasurements>
"""
START_END = (
    '<positions axis="2Theta" unit="deg"><startPosition>10.00</startPosition>'
    "<endPosition>70.00</endPosition></positions>"
)
LISTED = '<positions axis="2Theta" unit="deg"><listPositions>10 20.5 30 45 70</listPositions></positions>'


def _xrdml(positions: str = START_END, tag: str = "intensities", values: str = "12 340 5600 78 9") -> str:
    return XRDML.format(positions=positions, tag=tag, values=values)


def test_xrdml_start_end(tmp_path):
    got = read_pattern(_write(tmp_path, "scan.xrdml", _xrdml()))
    np.testing.assert_allclose(got.x, [10.0, 25.0, 40.0, 55.0, 70.0])
    np.testing.assert_array_equal(got.y, [12.0, 340.0, 5600.0, 78.0, 9.0])  # counts kept as they are
    assert got.axis == "two_theta" and got.sigma is None
    assert got.wavelength == pytest.approx(1.540598)
    assert got.meta["counting_time"] == pytest.approx(0.5)
    assert got.meta["kAlpha2"] == pytest.approx(1.544426)


def test_xrdml_list_positions_and_counts(tmp_path):
    got = read_pattern(_write(tmp_path, "list.xrdml", _xrdml(LISTED, tag="counts")))
    np.testing.assert_array_equal(got.x, [10.0, 20.5, 30.0, 45.0, 70.0])
    np.testing.assert_array_equal(got.y, [12.0, 340.0, 5600.0, 78.0, 9.0])


def test_xrdml_without_namespace_or_wavelength(tmp_path):
    text = (
        '<xrdMeasurements><scan><dataPoints><positions axis="2Theta"><listPositions>1 2</listPositions>'
        "</positions><intensities>3 4</intensities></dataPoints></scan></xrdMeasurements>"
    )
    got = read_pattern(_write(tmp_path, "bare.xrdml", text))
    assert got.wavelength is None and "counting_time" not in got.meta
    np.testing.assert_array_equal(got.y, [3.0, 4.0])


# ---------------------------------------------------------------------------------------------- bad input


def test_text_where_numbers_expected(tmp_path):
    text = "# tth I\n" + "".join(f"{10 + i} {i}\n" for i in range(5)) + "1.0 abc\n"
    error = _raises(_write(tmp_path, "bad.xy", text), "line 7", "'abc'", "1.0 abc")
    assert error.line == 7


def test_empty_csv_field(tmp_path):
    _raises(_write(tmp_path, "gap.csv", "2theta,I\n1,2\n2,\n"), "line 3", "empty field")


def test_wrong_number_of_columns(tmp_path):
    _raises(_write(tmp_path, "cols.xy", "1 2\n2 3\n3 4 5\n"), "line 3", "expected 2 columns, found 3")
    _raises(_write(tmp_path, "four.dat", "1 2 3 4\n"), "line 1", "2 or 3 columns")
    _raises(_write(tmp_path, "head.csv", "tth,I,esd\n1,2\n"), "line 2", "expected 3 columns, found 2")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_values(tmp_path, value):
    _raises(_write(tmp_path, "nan.xye", f"1 2 1\n2 {value} 1\n3 4 1\n"), "line 2", "not a finite number")


def test_non_finite_x_and_sigma(tmp_path):
    _raises(_write(tmp_path, "x.xy", "# c\n1 2\nnan 3\n"), "line 3", "x is nan")
    _raises(_write(tmp_path, "s.xye", "1 2 1\n2 3 inf\n"), "line 2", "sigma is inf")


def test_too_few_points(tmp_path):
    _raises(_write(tmp_path, "one.xy", "# only one\n1 2\n"), "too few data points (1)")
    _raises(_write(tmp_path, "none.csv", "two_theta,intensity\n# nothing\n"), "no data points")


def test_not_strictly_increasing(tmp_path):
    _raises(_write(tmp_path, "dup.xy", "1 2\n2 3\n2 4\n3 5\n"), "line 3", "strictly increasing", "line 2")
    _raises(_write(tmp_path, "back.xy", "1 2\n3 3\n2 4\n"), "line 3", "strictly increasing")


def test_decreasing_axis_is_an_error(tmp_path):
    error = _raises(_write(tmp_path, "down.xy", "# header\n3 1\n2 1\n1 1\n"), "line 3", "x decreases")
    assert error.line == 3


def test_negative_sigma(tmp_path):
    _raises(_write(tmp_path, "neg.xye", "1 2 0.1\n2 3 0.2\n3 4 -0.3\n"), "line 3", "sigma is negative")


def test_file_not_found(tmp_path):
    _raises(tmp_path / "missing.xy", "file not found")


def test_empty_file(tmp_path):
    _raises(_write(tmp_path, "empty.xy", ""), "file is empty")
    _raises(_write(tmp_path, "blank.csv", "\n  \n"), "file is empty")
    _raises(_write(tmp_path, "comments.dat", "# just\n! comments\n"), "no data points")


def test_unknown_extension(tmp_path):
    _raises(_write(tmp_path, "pattern.raw", "1 2\n2 3\n"), "unknown pattern format")


def test_xrdml_without_data_points(tmp_path):
    _raises(_write(tmp_path, "nodp.xrdml", "<xrdMeasurements><scan/></xrdMeasurements>"), "no <dataPoints>")


def test_xrdml_count_mismatch(tmp_path):
    _raises(_write(tmp_path, "mis.xrdml", _xrdml(LISTED, values="1 2 3 4 5 6")), "5 2Theta positions but 6")


def test_xrdml_malformed(tmp_path):
    _raises(_write(tmp_path, "xml.xrdml", "<xrdMeasurements>\n<scan>\n</xrdMeasurements>\n"), "invalid XML", "line 3")
    _raises(_write(tmp_path, "txt.xrdml", _xrdml(values="1 2 x")), "not a number")
    _raises(_write(tmp_path, "pos.xrdml", _xrdml(positions="")), 'axis="2Theta"')
    _raises(_write(tmp_path, "rev.xrdml", _xrdml(START_END.replace("10.00", "80.00"))), "x decreases")
    _raises(_write(tmp_path, "ax.xrdml", _xrdml()), "cannot read them as axis", axis="q")


# ---------------------------------------------------------------------------------------------- writing


def test_write_unknown_extension_and_bad_axis(tmp_path):
    with pytest.raises(InputError, match="out.xrdml"):
        write_pattern(tmp_path / "out.xrdml", X, Y)
    with pytest.raises(InputError, match="unknown axis"):
        write_pattern(tmp_path / "out.xy", X, Y, axis="deg")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.xy"
    path.write_text("original\n")
    with pytest.raises(InputError, match="keep.xy"):
        write_pattern(path, X, Y[:3])  # mismatched lengths
    with pytest.raises((TypeError, ValueError)):
        write_pattern(path, X, [1.0, 2.0, object(), 4.0, 5.0])  # cannot be formatted

    calls = []
    format_row = patterns._format_row

    def failing(values, sep):  # fail after some rows are already written
        calls.append(values)
        if len(calls) == 3:
            raise OSError("disk full")
        return format_row(values, sep)

    monkeypatch.setattr(patterns, "_format_row", failing)
    with pytest.raises(OSError, match="disk full"):
        write_pattern(path, X, Y, S)
    assert len(calls) == 3
    assert path.read_text() == "original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.xy"]  # no temporary file left behind
