"""A client of the coordinator's jobs API for programs: the CLI, the demo, benchmarks and tests.

Every call carries the operators' admin token; failures stay ``grpc.RpcError`` (the CLI turns
them into messages). Weights travel as checksummed chunks both ways (``protos.transfer``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from protos.edgefleet.v1 import jobs_pb2, jobs_pb2_grpc
from protos.transfer import DEFAULT_CHUNK_BYTES, blob_info, join, split

_FOLLOW_RETRIES = 5
_FOLLOW_MAX_WAIT_S = 10.0


class JobsClient:
    def __init__(self, channel: grpc.Channel, admin_token: str, timeout_s: float = 30.0) -> None:
        self._stub = jobs_pb2_grpc.JobsServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {admin_token}"),)
        self._timeout_s = timeout_s

    def upload_weights(self, data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> str:
        """Store starting weights (safetensors bytes); their SHA-256, for a job spec to name."""
        messages = [jobs_pb2.UploadWeightsRequest(header=blob_info(data))]
        messages += [jobs_pb2.UploadWeightsRequest(chunk=c) for c in split(data, chunk_bytes)]
        response = self._stub.UploadWeights(
            iter(messages), metadata=self._metadata, timeout=self._timeout_s
        )
        return str(response.sha256_hex)

    def submit(self, spec: jobs_pb2.JobSpec) -> jobs_pb2.Job:
        return self._job(self._stub.SubmitJob, jobs_pb2.SubmitJobRequest(spec=spec))

    def get(self, job_id: str) -> jobs_pb2.Job:
        return self._job(self._stub.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(self) -> list[jobs_pb2.Job]:
        """Every job, newest first, page after page."""
        found: list[jobs_pb2.Job] = []
        token = ""
        while True:
            request = jobs_pb2.ListJobsRequest(page_token=token)
            response = self._stub.ListJobs(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
            found.extend(response.jobs)
            token = response.next_page_token
            if not token:
                return found

    def cancel(self, job_id: str) -> jobs_pb2.Job:
        return self._job(self._stub.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))

    def _job(self, method: Callable[..., Any], request: object) -> jobs_pb2.Job:
        """A unary call answered with a job (submit, get, cancel)."""
        response = method(request, metadata=self._metadata, timeout=self._timeout_s)
        job: jobs_pb2.Job = response.job
        return job

    def list_nodes(self, hardware_class: str = "") -> list[jobs_pb2.Node]:
        request = jobs_pb2.ListNodesRequest(hardware_class=hardware_class)
        response = self._stub.ListNodes(request, metadata=self._metadata, timeout=self._timeout_s)
        return list(response.nodes)

    def follow(self, job_id: str, after_sequence: int = 0) -> Iterator[jobs_pb2.JobEvent]:
        """A job's events after ``after_sequence`` until the job ends.

        A lost connection (``UNAVAILABLE``) is retried from the last event seen, with a growing
        wait, so nothing is missed or repeated; other errors, and too many retries, raise.
        """
        seen = after_sequence
        attempts = 0
        while True:
            request = jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=seen)
            try:
                for event in self._stub.WatchJob(request, metadata=self._metadata):
                    attempts = 0
                    seen = event.sequence
                    yield event
                return
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE or attempts >= _FOLLOW_RETRIES:
                    raise
                attempts += 1
                time.sleep(min(2.0**attempts, _FOLLOW_MAX_WAIT_S))

    def watch_for(
        self, job_id: str, timeout_s: float, after_sequence: int = 0
    ) -> Iterator[jobs_pb2.JobEvent]:
        """A job's events after ``after_sequence`` for at most ``timeout_s`` (or until the job
        ends): for callers that look at other things between events."""
        request = jobs_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        try:
            yield from self._stub.WatchJob(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise

    def download_model(self, job_id: str, version: int | None = None) -> bytes:
        """A job's model (the latest version unless one is named), checked against its digest
        (``protos.transfer.TransferError`` if it does not check out)."""
        request = jobs_pb2.DownloadModelRequest(job_id=job_id, version=version)
        stream = self._stub.DownloadModel(request, metadata=self._metadata, timeout=self._timeout_s)
        first = next(stream)
        if not first.HasField("header"):
            raise ValueError("the download did not start with a header")
        return join(first.header.blob, (message.chunk for message in stream))
