"""Round bookkeeping that request handlers and the conductor share: which model a round starts
from, its job's spec, and its running FedAvg sum.

These run inside request handlers (an upload folds into the sum, a pull sends the round's
weights) and inside the conductor's loop (closing a round writes the sum); so they take the
narrow pieces of state they need and raise their own errors, which each caller turns into what
it answers with (a handler into a ``FleetError``, the conductor into a failed round).
"""

from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.aggregation import RoundSums, RunningSum, Update
from orchestrator.job_spec import JobSpec
from orchestrator.storage import Storage
from orchestrator.storage.model_store import ModelStore
from orchestrator.storage.records import ModelVersionRecord, UpdateStatus

_LOG = logging.getLogger(__name__)


class NoModelYet(LookupError):
    """The job has no model version a round could start from."""


def starting_model(storage: Storage, job_id: str, round_number: int) -> ModelVersionRecord:
    """The global model round ``round_number`` starts from: the newest made before it.

    Version 0 is the job's initial weights and version ``n + 1`` the model round ``n`` made; a
    failed round makes none, so the next one starts from the last that did.
    """
    versions = [
        version
        for version in storage.list_model_versions(job_id)
        if version.version <= round_number
    ]
    if not versions:
        raise NoModelYet(f"job {job_id} has no model yet")
    return max(versions, key=lambda version: version.version)


def job_spec(storage: Storage, job_id: str) -> JobSpec:
    job = storage.get_job(job_id)
    assert job is not None, "a round's job exists (cascading delete)"
    return JobSpec.from_stored(job.spec_json)


def round_sum(
    storage: Storage, model_store: ModelStore, sums: RoundSums, round_id: int, base_path: Path
) -> RunningSum:
    """The running FedAvg sum of round ``round_id``; rebuilt from its recorded updates if need be.

    Call under the round lock. After a restart (or a dropped sum) every update the registry
    holds as accepted is folded in again from the model store, so each acknowledged update counts.
    """
    running = sums.get(round_id)
    if running is not None and running.global_path == base_path and not running.broken:
        return running
    running = RunningSum(base_path)
    for record in storage.list_updates(round_id, status=UpdateStatus.ACCEPTED):
        problem = running.add(
            record.node_id, Update(model_store.path(record.blob_digest or ""), record.num_samples)
        )
        if problem is not None:
            # It passed when it arrived: the stored file changed since, which content
            # addressing rules out short of disk damage. It cannot count; say so loudly.
            _LOG.error(
                "round %d: accepted update of %s unusable: %s", round_id, record.node_id, problem[1]
            )
    sums.put(round_id, running)
    return running
