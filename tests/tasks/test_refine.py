"""``refine_structures``: refuses what it cannot refine before writing anything (its results are tested through
``atomdiff refine`` in tests/cli/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.errors import InputError
from atomdiff.structure import Structure
from atomdiff.tasks.refine import refine_structures


def _pattern() -> MeasuredPattern:
    x = np.arange(20, 80, 0.05)
    return MeasuredPattern(x, 100 + 50 * np.exp(-(((x - 40) / 0.1) ** 2)), None, "two_theta", "p.xy")


def test_nothing_to_refine_or_output_a_file_is_refused(tmp_path: Path):
    structure = Structure([29], [[0, 0, 0]], np.eye(3) * 3.6)
    with pytest.raises(InputError, match="no structure"):
        refine_structures(_pattern(), [], tmp_path / "out")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(InputError, match="folder"):
        refine_structures(_pattern(), [structure], tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep"
    with pytest.raises(InputError, match="source names"):
        refine_structures(_pattern(), [structure], tmp_path / "out", sources=["a", "b"])
    assert not (tmp_path / "out").exists()
