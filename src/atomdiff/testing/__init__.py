"""Helpers for testing code built on atomdiff (shipped, like e3nn's ``assert_equivariant``)."""

from atomdiff.testing.symmetry import (
    Transform,
    assert_symmetric,
    change_basis,
    permute,
    random_orthogonal,
    random_unimodular,
    rotate,
    shift,
)

__all__ = [
    "Transform",
    "assert_symmetric",
    "change_basis",
    "permute",
    "random_orthogonal",
    "random_unimodular",
    "rotate",
    "shift",
]
