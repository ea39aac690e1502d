"""Errors of the teacher stage. Every one is a :class:`RationalignError`: the CLI prints one line, exit 2."""

from __future__ import annotations

from rationalign.errors import ConfigError, RationalignError


class TeacherError(RationalignError):
    """A teacher cannot produce a distribution (bad label space, bad model, bad prompt, ...)."""


class TeacherSpecError(TeacherError, ConfigError):
    """A teacher spec string (``llm:smollm2-135m?mode=codes``) or option is invalid."""


class TeacherHTTPError(TeacherError):
    """An LLM endpoint answered with an error status (after retries where retrying makes sense)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TeacherConnectionError(TeacherHTTPError):
    """An LLM endpoint could not be reached or timed out on every attempt."""


class TeacherResponseError(TeacherHTTPError):
    """An LLM endpoint answered 200 but the body is not a usable completions response."""
