"""Exceptions that the command line turns into one clear message and exit code 2."""

from __future__ import annotations


class AtomdiffError(Exception):
    """Base class of every error atomdiff raises on purpose."""


class InputError(AtomdiffError, ValueError):
    """Bad input: a file, a line or a parameter that is not what was expected.

    The message names the file (and line) or the parameter, so the command line can print it
    without a traceback.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
