"""Checks of option values that several commands share; each fails with exit status 2."""

from __future__ import annotations

from edgefleet.commands.output import fail


def memory_budget_bytes(text: str) -> int:
    """``--memory-budget`` in bytes (``1GiB``, ``768MiB``, ``1.5e9``)."""
    from checkpointing.planning.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        fail(f"--memory-budget: {exc}")


def known_models(*names: str | None) -> None:
    """Every given model name is one ``build_model`` accepts (``None`` is skipped)."""
    from checkpointing.execution.models import UnknownModelError, check_model_name

    for name in names:
        if name is not None:
            try:
                check_model_name(name)
            except UnknownModelError as exc:
                fail(str(exc))
