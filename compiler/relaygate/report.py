"""Output formats for findings, in a registry that also feeds the CLI choices.

Each formatter takes the findings and a short summary and returns the whole
text to print. Adding a format is one function and one ``@formatter`` line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from relaygate import __version__
from relaygate.findings import Finding, Severity
from relaygate.rules import RULES

Formatter = Callable[[Sequence[Finding], str], str]
FORMATTERS: dict[str, Formatter] = {}


def formatter(name: str) -> Callable[[Formatter], Formatter]:
    def register(function: Formatter) -> Formatter:
        FORMATTERS[name] = function
        return function

    return register


def summary_line(findings: Sequence[Finding], files: int) -> str:
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    warnings = len(findings) - errors
    return f"{files} files checked: {errors} errors, {warnings} warnings"


@formatter("text")
def _text(findings: Sequence[Finding], summary: str) -> str:
    return "".join(f"{f.as_text()}\n" for f in findings) + summary + "\n"


@formatter("json")
def _json(findings: Sequence[Finding], summary: str) -> str:
    payload = {
        "summary": summary,
        "errors": sum(1 for f in findings if f.is_error),
        "warnings": sum(1 for f in findings if not f.is_error),
        "findings": [
            {
                "path": f.path,
                "line": f.line,
                "column": f.column,
                "rule": f.rule,
                "severity": str(f.severity),
                "message": f.message,
                "hint": f.hint,
            }
            for f in findings
        ],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


@formatter("github")
def _github(findings: Sequence[Finding], summary: str) -> str:
    """GitHub Actions workflow commands: one annotation per finding."""
    lines = []
    for f in findings:
        level = "error" if f.is_error else "warning"
        props = (
            f"file={_escape_property(f.path)},line={f.line},col={f.column},"
            f"title={_escape_property(f.rule)}"
        )
        lines.append(f"::{level} {props}::{_escape_data(f'{f.message} ({f.hint})')}\n")
    return "".join(lines) + summary + "\n"


@formatter("sarif")
def _sarif(findings: Sequence[Finding], summary: str) -> str:
    """SARIF 2.1.0, for code-scanning upload."""
    used = sorted({f.rule for f in findings})
    index = {rule_id: i for i, rule_id in enumerate(used)}
    rules = [
        {
            "id": rule_id,
            "shortDescription": {"text": RULES[rule_id].summary},
            "help": {"text": RULES[rule_id].hint},
            "defaultConfiguration": {
                "level": "error" if RULES[rule_id].severity is Severity.ERROR else "warning"
            },
        }
        for rule_id in used
    ]
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": "error" if f.is_error else "warning",
            "message": {"text": f"{f.message} ({f.hint})"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
        }
        for f in findings
    ]
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "relaygate",
                        "version": __version__,
                        "informationUri": "https://relaygate.example/",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
