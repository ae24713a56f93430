"""How commands report: JSON on stdout for machines, messages on stderr for people."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import typer

EXIT_INFEASIBLE = 1
EXIT_BAD_INPUT = 2


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
