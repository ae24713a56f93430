"""The registry's errors: one base type, so a caller can map them to gRPC statuses in one place."""

from __future__ import annotations


class StorageError(Exception):
    """Any error of the registry that a caller is expected to handle."""


class StorageConflict(StorageError):
    """The write contradicts what is stored: a duplicate, or a status that moved on meanwhile."""


class StorageNotFound(StorageError):
    """The record named (or one it refers to) does not exist."""
