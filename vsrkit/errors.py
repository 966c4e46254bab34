"""Exceptions for failures the user caused (bad input, bad option, missing weights).

The command line prints a :class:`UserError` as one line and exits with status 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave: a path, a value or a file.

    The message names the key or file, the value, what was expected and, where there is
    one, the next step: "`scale` must be >= 1. Got 0."
    """


class VideoReadError(UserError):
    """A video or image could not be read (missing, empty, corrupt, truncated)."""


class WeightsError(UserError):
    """Expected weight files are missing or do not match the model."""
