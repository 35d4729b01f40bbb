"""Errors in what the user gave us (data, weights, settings), as opposed to bugs: the
command-line tools report them as one message with the fix, without a traceback."""

from __future__ import annotations

__all__ = [
    "UserInputError",
    "ConfigError",
    "DatasetMissingError",
    "WeightsUnavailableError",
    "TeacherTooWeakError",
]


class UserInputError(Exception):
    """A problem with the user's input whose message says what is wrong and how to fix it."""


class ConfigError(UserInputError, ValueError):
    """A config value that cannot work (unknown key or name, mismatched teacher, ...)."""


class DatasetMissingError(UserInputError, FileNotFoundError):
    """A dataset named in the config has no files where its registration expects them."""


class WeightsUnavailableError(UserInputError, FileNotFoundError):
    """Weights that are neither on disk nor downloadable from here."""


class TeacherTooWeakError(UserInputError, RuntimeError):
    """The teacher scores below the required minimum on the validation data: distilling from
    it would teach the student noise (wrong weights, class order or input format)."""
