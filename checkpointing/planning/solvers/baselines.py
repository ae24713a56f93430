"""Baseline schedules: store-all, recompute-all and PyTorch's ``checkpoint_sequential``."""

from __future__ import annotations

from checkpointing.planning.schedule import Op, OpKind, Schedule


def _check_length(length: int) -> None:
    if length < 1:
        raise ValueError(f"a chain needs at least one stage, got {length}")


def advance(start: int, stop: int) -> list[Op]:
    """Forward without grad from a stored ``a_start`` to ``a_stop``, keeping ``a_start`` only."""
    if stop <= start:
        return []
    ops = [Op(OpKind.FORWARD_CHECK, start)]
    ops += [Op(OpKind.FORWARD_NOGRAD, k) for k in range(start + 1, stop)]
    return ops


def reverse_step(stage: int, length: int) -> list[Op]:
    """Record the tape of ``stage`` and run its backward (the loss when ``stage == length``)."""
    if stage == length:
        return [Op(OpKind.LOSS, length)]
    return [Op(OpKind.FORWARD_ENABLE, stage), Op(OpKind.BACKWARD, stage)]


def store_all(length: int) -> Schedule:
    """Plain autograd: record every tape, then the loss, then every backward."""
    _check_length(length)
    ops = [Op(OpKind.FORWARD_ENABLE, i) for i in range(length)]
    ops.append(Op(OpKind.LOSS, length))
    ops += [Op(OpKind.BACKWARD, i) for i in reversed(range(length))]
    return Schedule(length, tuple(ops))


def recompute_all(length: int) -> Schedule:
    """Keep only the input; recompute from it before every backward (least memory, most time)."""
    _check_length(length)
    ops: list[Op] = []
    for stage in range(length, -1, -1):
        ops += advance(0, stage)
        ops += reverse_step(stage, length)
    return Schedule(length, tuple(ops))


def checkpoint_sequential_segments(length: int, segments: int) -> list[tuple[int, int]]:
    """Stage ranges ``[first, last]`` as ``torch.utils.checkpoint.checkpoint_sequential`` cuts them.

    PyTorch gives each of the first ``segments - 1`` segments ``length // segments`` stages and the
    last one the rest, and never checkpoints the last (pytorch/pytorch#68423).
    """
    _check_length(length)
    if not 1 <= segments <= length:
        raise ValueError(f"segments must be between 1 and {length}, got {segments}")
    size = length // segments
    bounds = [(i * size, (i + 1) * size - 1) for i in range(segments - 1)]
    bounds.append(((segments - 1) * size, length - 1))
    return bounds


def checkpoint_sequential(length: int, segments: int) -> Schedule:
    """The schedule ``checkpoint_sequential(functions, segments, x)`` runs, in this engine's ops."""
    bounds = checkpoint_sequential_segments(length, segments)
    *checkpointed, (last_first, last_last) = bounds
    ops: list[Op] = []
    for first, last in checkpointed:
        ops += advance(first, last + 1)
    ops += [Op(OpKind.FORWARD_ENABLE, i) for i in range(last_first, last_last + 1)]
    ops.append(Op(OpKind.LOSS, length))
    ops += [Op(OpKind.BACKWARD, i) for i in range(last_last, last_first - 1, -1)]
    for first, last in reversed(checkpointed):
        ops += [Op(OpKind.FORWARD_ENABLE, i) for i in range(first, last + 1)]
        ops += [Op(OpKind.BACKWARD, i) for i in range(last, first - 1, -1)]
    return Schedule(length, tuple(ops))


def checkpoint_sequential_memory(length: int, segments: int) -> int:
    """Stored activations of ``checkpoint_sequential`` on ``length`` unit stages (the seed formula).

    ``s - 1 + (l - floor(l / s) * (s - 1))``: one checkpoint per checkpointed segment plus every
    activation of the last segment, which is never checkpointed.
    """
    checkpoint_sequential_segments(length, segments)
    return segments - 1 + (length - (length // segments) * (segments - 1))
