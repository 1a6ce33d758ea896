"""What the user knows of the chemistry, enforced exactly while species are sampled.

A :class:`CompositionConstraint` is checked against what a model can produce before sampling starts; a
constraint it cannot satisfy raises :class:`InputError` instead of yielding a structure that violates it.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.structure.elements import atomic_number, chemical_symbols


def parse_formula(text: str) -> dict[int, int]:
    """``"Cu2ZnSnS4"`` → ``{29: 2, 30: 1, 50: 1, 16: 4}`` (parentheses not supported; integer counts)."""
    text = text.strip()
    tokens = re.findall(r"([A-Z][a-z]?)(\d*)", text)
    if not text or "".join(s + n for s, n in tokens) != text:
        raise InputError(f"cannot read formula {text!r}: write it like Cu2ZnSnS4 (element symbols and counts)")
    counts: Counter[int] = Counter()
    for symbol, number in tokens:
        counts[atomic_number(symbol)] += int(number) if number else 1
    return dict(counts)


def parse_count_ranges(text: str) -> dict[int, tuple[int, int]]:
    """``"Cu:1-4,S:4"`` → ``{29: (1, 4), 16: (4, 4)}``."""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([A-Za-z]{1,2}):(\d+)(?:-(\d+))?", item)
        if not m:
            raise InputError(f"element count range {item!r}: write it like Cu:1-4 or S:4")
        lo = int(m.group(2))
        hi = int(m.group(3)) if m.group(3) else lo
        if hi < lo:
            raise InputError(f"element count range {item!r}: maximum below minimum")
        out[atomic_number(m.group(1))] = (lo, hi)
    return out


def _names(zs) -> str:
    return ", ".join(chemical_symbols[z] for z in sorted(zs))


@dataclasses.dataclass
class CompositionConstraint:
    """Constraints on the composition of every generated cell.

    Attributes:
        formula: exact content of one formula unit (atomic number → count); cells hold a whole number of
            formula units within ``atoms`` (default: exactly one).
        required: elements that must appear.
        excluded: elements that must not appear.
        count_ranges: element → (min, max) atoms per cell.
        atoms: (min, max) atoms per cell.
    """

    formula: dict[int, int] | None = None
    required: frozenset[int] = frozenset()
    excluded: frozenset[int] = frozenset()
    count_ranges: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)
    atoms: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.required = frozenset(self.required)
        self.excluded = frozenset(self.excluded)
        both = self.required & self.excluded
        if both:
            raise InputError(f"elements both required and excluded: {_names(both)}")
        if self.atoms is not None and not 1 <= self.atoms[0] <= self.atoms[1]:
            raise InputError(f"atoms per cell range {self.atoms} is empty or not positive")
        if self.formula is not None:
            bad = set(self.formula) & self.excluded
            if bad:
                raise InputError(f"--formula contains excluded elements: {_names(bad)}")
            missing = self.required - set(self.formula)
            if missing:
                raise InputError(f"--formula lacks required elements: {_names(missing)}")
        for z, (lo, _) in self.count_ranges.items():
            if z in self.excluded and lo > 0:
                raise InputError(f"{chemical_symbols[z]} is excluded but needs at least {lo} atoms")

    # --- feasibility ------------------------------------------------------------------------------
    def atom_count_choices(self, known_elements: set[int], max_atoms: int) -> list[int]:
        """Every atom count per cell the constraint allows (raises if there is none)."""
        lo, hi = self.atoms if self.atoms is not None else (1, max_atoms)
        if self.formula is not None:
            unknown = set(self.formula) - known_elements
            if unknown:
                raise InputError(f"the model has never seen {_names(unknown)}: it cannot generate this formula")
            n_unit = sum(self.formula.values())
            if self.atoms is None:
                lo = hi = n_unit
            choices = [z * n_unit for z in range(1, hi // n_unit + 1) if lo <= z * n_unit <= hi]
            if not choices:
                raise InputError(f"no whole number of {n_unit}-atom formula units fits {lo}–{hi} atoms per cell")
            for z, (cmin, cmax) in self.count_ranges.items():
                for n in choices:
                    k = self.formula.get(z, 0) * n // n_unit
                    if not cmin <= k <= cmax:
                        raise InputError(f"--formula gives {k} {chemical_symbols[z]}, outside {cmin}–{cmax}")
            return choices
        allowed = self.allowed_elements(known_elements)
        unknown = self.required - known_elements
        if unknown:
            raise InputError(f"the model has never seen {_names(unknown)}: it cannot place these elements")
        if not allowed:
            raise InputError("no element is left to place after the exclusions")
        need = self.minimum_atoms()
        open_ended = any(z not in self.count_ranges for z in allowed)
        capacity = sum(self.count_ranges.get(z, (0, 10**9))[1] for z in allowed) if not open_ended else 10**9
        choices = [n for n in range(max(lo, 1), hi + 1) if need <= n <= capacity]
        if not choices:
            raise InputError(
                f"the constraints need at least {need} atoms (and allow at most {capacity}) but the cell may hold "
                f"{lo}–{hi}"
            )
        return choices

    def only_required(self, known_elements: set[int]) -> CompositionConstraint:
        """This constraint with every element of ``known_elements`` that is not required excluded: the cell
        holds exactly the required elements (``atomdiff solve --elements``: the sample's elements)."""
        return dataclasses.replace(self, excluded=self.excluded | (set(known_elements) - self.required))

    def cell_proposals(self, cells: dict[str, int]) -> list[dict[int, int]]:
        """The training cell contents (:attr:`DataStatistics.cells`) this constraint allows, as exact cell
        formulas, smallest cells first and, of one size, the most frequent first (none with a formula given)."""
        if self.formula is not None:
            return []
        out = []
        for text, count in cells.items():
            content = parse_formula(text)
            n = sum(content.values())
            if not self.check(np.array([z for z, k in content.items() for _ in range(k)])):
                out.append((n, -count, text, content))
        return [content for *_, content in sorted(out, key=lambda row: row[:3])]

    def allowed_elements(self, known_elements: set[int]) -> set[int]:
        allowed = set(known_elements) - self.excluded
        return {z for z in allowed if self.count_ranges.get(z, (0, 1))[1] > 0}

    def minimum_atoms(self) -> int:
        mins = {z: lo for z, (lo, _) in self.count_ranges.items()}
        for z in self.required:
            mins[z] = max(mins.get(z, 0), 1)
        return sum(mins.values())

    def formula_numbers(self, n_atoms: int) -> np.ndarray:
        """The atomic numbers of a cell of ``n_atoms`` built from the formula."""
        assert self.formula is not None
        z_units = n_atoms // sum(self.formula.values())
        return np.array([z for z, k in sorted(self.formula.items()) for _ in range(k * z_units)], dtype=np.int64)

    # --- sampling ------------------------------------------------------------------------------------
    def reveal(
        self,
        logits: torch.Tensor,
        tokens: torch.Tensor,
        batch_idx: torch.Tensor,
        to_reveal: torch.Tensor,
        known_elements: set[int],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Draw species for the masked atoms in ``to_reveal`` so the constraint stays satisfiable.

        Atoms are revealed one at a time per structure: an element at its maximum is forbidden, and once
        the masked atoms left are just enough to cover the missing minimum counts, only missing elements
        may be drawn.
        """
        tokens = tokens.clone()
        vocab = logits.shape[-1]
        base = torch.full((vocab,), float("-inf"), dtype=logits.dtype)
        allowed = sorted(self.allowed_elements(known_elements))
        base[allowed] = 0.0
        mins = {z: lo for z, (lo, _) in self.count_ranges.items()}
        for z in self.required:
            mins[z] = max(mins.get(z, 0), 1)
        maxs = {z: hi for z, (_, hi) in self.count_ranges.items()}
        for b in torch.unique(batch_idx[to_reveal]).tolist():
            atoms = torch.nonzero(batch_idx == b).squeeze(-1)
            counts = Counter(int(z) for z in tokens[atoms] if int(z) != 0)
            masked_left = int((tokens[atoms] == 0).sum())
            for a in atoms[to_reveal[atoms]].tolist():
                mask = base.clone()
                for z, hi in maxs.items():
                    if counts[z] >= hi:
                        mask[z] = float("-inf")
                deficit = {z: m - counts[z] for z, m in mins.items() if counts[z] < m}
                if deficit and sum(deficit.values()) >= masked_left:
                    only = torch.full_like(mask, float("-inf"))
                    only[list(deficit)] = 0.0
                    mask = only
                probs = torch.softmax(logits[a].double() + mask.double(), -1)
                z = int(torch.multinomial(probs, 1, generator=generator))
                tokens[a] = z
                counts[z] += 1
                masked_left -= 1
        return tokens

    def check(self, numbers: np.ndarray) -> list[str]:
        """Violations of the constraint by one cell's atomic numbers (empty when satisfied)."""
        problems = []
        counts = Counter(int(z) for z in numbers)
        if self.formula is not None:
            n_unit = sum(self.formula.values())
            z_units = len(numbers) // n_unit
            want = {z: k * z_units for z, k in self.formula.items()}
            if dict(counts) != want:
                problems.append("composition differs from the formula")
        if set(counts) & self.excluded:
            problems.append(f"contains excluded {_names(set(counts) & self.excluded)}")
        if self.required - set(counts):
            problems.append(f"lacks required {_names(self.required - set(counts))}")
        for z, (lo, hi) in self.count_ranges.items():
            if not lo <= counts.get(z, 0) <= hi:
                problems.append(f"{chemical_symbols[z]} count {counts.get(z, 0)} outside {lo}–{hi}")
        if self.atoms is not None and not self.atoms[0] <= len(numbers) <= self.atoms[1]:
            problems.append(f"{len(numbers)} atoms outside {self.atoms[0]}–{self.atoms[1]}")
        return problems
