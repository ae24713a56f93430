"""The coordinator's registry (SQL, behind one interface) and its model store (files on disk)."""

from orchestrator.storage.credentials import hash_credential, new_credential, verify_credential
from orchestrator.storage.engine import create_storage_engine, sqlite_url
from orchestrator.storage.errors import StorageConflict, StorageError, StorageNotFound
from orchestrator.storage.interface import Storage
from orchestrator.storage.migrate import migrate
from orchestrator.storage.model_store import (
    BlobNotFound,
    DigestMismatch,
    ModelStore,
    ModelStoreError,
)
from orchestrator.storage.records import (
    AssignmentRecord,
    AssignmentStatus,
    Hardware,
    JobRecord,
    JobStatus,
    MemoryModelRecord,
    ModelVersionRecord,
    NewAssignment,
    NewJob,
    NewMemoryModel,
    NewModelVersion,
    NewNode,
    NewRound,
    NewUpdate,
    NodeRecord,
    NodeStatus,
    RoundRecord,
    RoundStatus,
    UpdateRecord,
    UpdateStatus,
)
from orchestrator.storage.sql import SqlStorage

__all__ = [
    "AssignmentRecord",
    "AssignmentStatus",
    "BlobNotFound",
    "DigestMismatch",
    "Hardware",
    "JobRecord",
    "JobStatus",
    "MemoryModelRecord",
    "ModelStore",
    "ModelStoreError",
    "ModelVersionRecord",
    "NewAssignment",
    "NewJob",
    "NewMemoryModel",
    "NewModelVersion",
    "NewNode",
    "NewRound",
    "NewUpdate",
    "NodeRecord",
    "NodeStatus",
    "RoundRecord",
    "RoundStatus",
    "SqlStorage",
    "Storage",
    "StorageConflict",
    "StorageError",
    "StorageNotFound",
    "UpdateRecord",
    "UpdateStatus",
    "create_storage_engine",
    "hash_credential",
    "migrate",
    "new_credential",
    "sqlite_url",
    "verify_credential",
]
