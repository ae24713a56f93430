"""Alembic migrations of the registry (run them with ``orchestrator.storage.migrate``)."""
