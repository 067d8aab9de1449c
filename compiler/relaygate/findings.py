"""Findings: the one value type for every problem found in user data.

A finding names the file, line and column, a stable rule id, a severity, what
is wrong and what to do about it. Rules live in ``relaygate.rules``; a finding
is always made from a rule so its id, severity and hint cannot drift apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Rule:
    """A check with a stable id. ``hint`` says what the user should do."""

    id: str
    severity: Severity
    summary: str
    hint: str

    def at(
        self, path: str, line: int, column: int, message: str, hint: str | None = None
    ) -> Finding:
        return Finding(
            path=path,
            line=line,
            column=column,
            rule=self.id,
            severity=self.severity,
            message=message,
            hint=self.hint if hint is None else hint,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One located problem. Lines and columns are 1-based; 0 means "whole file"."""

    path: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    hint: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_text(self) -> str:
        return (
            f"{self.path}:{self.line}:{self.column}: {self.severity} {self.rule}: "
            f"{self.message} ({self.hint})"
        )

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.column, self.rule, self.message)
