"""Errors a user must read, kept apart from bugs.

A `CdsError` carries a sentence for a person (pharmacist, integrator); the CLI prints it without a
traceback and the HTTP layer turns it into a 4xx JSON body. Anything else is a bug and may crash.
"""
from __future__ import annotations

from dataclasses import dataclass


class CdsError(Exception):
    """An error caused by input that a user can fix. `str(err)` is the message to show."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One validation finding in a knowledge file: where it is and what is wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class KnowledgeError(CdsError):
    """The knowledge base (guidelines/, rules/, hooks/) does not validate."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
