"""Errors a user can act on. The CLI prints them, one line per problem, and exits 2; never a
traceback."""

from __future__ import annotations

from collections.abc import Sequence


class NeatExporterError(Exception):
    """Base of every error a user can act on (their input, their files), not a bug."""


class ConfigError(NeatExporterError):
    """A configuration value is wrong; `key` is its dotted path (e.g. ``overload.params.otf``)."""

    def __init__(self, key: str, reason: str, more: Sequence[ConfigError] = ()):
        super().__init__("\n".join([f"{key}: {reason}", *(str(other) for other in more)]))
        self.key = key
        self.reason = reason
        self.more = tuple(more)
        """Further problems of the same configuration, one line each in the message."""

    @classmethod
    def of(cls, problems: Sequence[ConfigError]) -> ConfigError:
        """Several problems as one error: the first, then the others."""
        return cls(problems[0].key, problems[0].reason, problems[1:])


class ParameterError(NeatExporterError, ValueError):
    """An algorithm was asked for by an unknown name or given a bad parameter."""

    def __init__(self, algorithm: str, parameter: str | None, reason: str):
        where = f"{algorithm}: parameter {parameter!r}" if parameter else algorithm
        super().__init__(f"{where}: {reason}")
        self.algorithm = algorithm
        self.parameter = parameter
        self.reason = reason


class InputError(NeatExporterError, ValueError):
    """Data handed to the tool (a trace, a history file, a payload) is malformed.

    The message names what is wrong and where."""


class WriteError(NeatExporterError, OSError):
    """A file could not be written: its folder is missing or read-only, the disk is full...
    Not the input's fault; the message names the file and the reason."""


def innermost_cause(error: BaseException) -> str:
    """The innermost cause of a wrapped error (requests nests urllib3's), said once."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    reason = getattr(error, "reason", None)
    return str(reason if isinstance(reason, BaseException) else error)
