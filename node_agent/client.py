"""The agent's side of the fleet protocol: one method per RPC, over one gRPC channel.

The client holds the node's identity once registered and sends its credential with every call.
It does no retrying of its own: the agent decides what a failure means (back off, re-register,
give up a task). Benchmarks and tests drive a coordinator through this same client.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc
from protos.transfer import DEFAULT_CHUNK_BYTES, blob_info, join, split


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    """The CA that signed the coordinator's certificate."""
    cert: Path | None = None
    """This board's certificate, for mutual TLS."""
    key: Path | None = None


# gRPC waits up to two minutes between reconnection attempts by default; a board whose
# coordinator restarted should be back within seconds.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def open_channel(address: str, tls: TlsFiles | None = None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


class FleetClient:
    def __init__(
        self,
        channel: grpc.Channel,
        *,
        node_id: str = "",
        credential: str = "",
        timeout_s: float = 60.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._stub = fleet_pb2_grpc.FleetServiceStub(channel)
        self.node_id = node_id
        self.credential = credential
        self.timeout_s = timeout_s
        self.chunk_bytes = chunk_bytes

    @property
    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.credential}")]

    def register(
        self,
        enrollment_token: str,
        hardware: common_pb2.Hardware,
        *,
        node_name: str = "board",
        agent_version: str = "",
        hardware_class: str = "",
    ) -> fleet_pb2.RegisterResponse:
        response: fleet_pb2.RegisterResponse = self._stub.Register(
            fleet_pb2.RegisterRequest(
                enrollment_token=enrollment_token,
                hardware=hardware,
                node_name=node_name,
                agent_version=agent_version,
                hardware_class=hardware_class,
            ),
            timeout=self.timeout_s,
        )
        self.node_id = response.node_id
        self.credential = response.node_credential
        self.chunk_bytes = min(self.chunk_bytes, response.max_chunk_bytes or self.chunk_bytes)
        return response

    def heartbeat(
        self, current_task_id: str = "", rss_bytes: int = 0
    ) -> fleet_pb2.HeartbeatResponse:
        response: fleet_pb2.HeartbeatResponse = self._stub.Heartbeat(
            fleet_pb2.HeartbeatRequest(
                node_id=self.node_id, current_task_id=current_task_id, rss_bytes=rss_bytes
            ),
            metadata=self._metadata,
            timeout=self.timeout_s,
        )
        return response

    def pull_task(self) -> fleet_pb2.PullTaskResponse:
        response: fleet_pb2.PullTaskResponse = self._stub.PullTask(
            fleet_pb2.PullTaskRequest(node_id=self.node_id),
            metadata=self._metadata,
            timeout=self.timeout_s,
        )
        return response

    def upload_profile(
        self,
        task_id: str,
        model_name: str,
        profiles: Sequence[fleet_pb2.ChainProfile],
        *,
        parameter_bytes: int,
        buffer_bytes: int,
        num_classes: int,
        allocator_overhead_fraction: float | None = None,
        allocator_overhead_bytes: int = 0,
        model_library_bytes: int = 0,
    ) -> fleet_pb2.UploadProfileResponse:
        response: fleet_pb2.UploadProfileResponse = self._stub.UploadProfile(
            fleet_pb2.UploadProfileRequest(
                node_id=self.node_id,
                task_id=task_id,
                model_name=model_name,
                parameter_bytes=parameter_bytes,
                buffer_bytes=buffer_bytes,
                profiles=profiles,
                allocator_overhead_fraction=allocator_overhead_fraction,
                allocator_overhead_bytes=allocator_overhead_bytes,
                model_library_bytes=model_library_bytes,
                num_classes=num_classes,
            ),
            metadata=self._metadata,
            timeout=self.timeout_s,
        )
        return response

    def download_weights(self, job_id: str, round_number: int) -> bytes:
        """The round's global weights, checked against their header (``TransferError``)."""
        stream = self._stub.DownloadWeights(
            fleet_pb2.DownloadWeightsRequest(
                node_id=self.node_id,
                job_id=job_id,
                round=round_number,
                max_chunk_bytes=self.chunk_bytes,
            ),
            metadata=self._metadata,
            timeout=self.timeout_s,
        )
        return receive_weights(stream)

    def upload_update(
        self,
        task_id: str,
        job_id: str,
        round_number: int,
        data: bytes,
        *,
        num_samples: int,
        measured_peak_bytes: int = 0,
        train_loss: float = 0.0,
        train_duration_s: float = 0.0,
    ) -> fleet_pb2.UploadUpdateResponse:
        return self.upload_update_messages(
            self.update_messages(
                task_id,
                job_id,
                round_number,
                data,
                num_samples=num_samples,
                measured_peak_bytes=measured_peak_bytes,
                train_loss=train_loss,
                train_duration_s=train_duration_s,
            )
        )

    def update_messages(
        self,
        task_id: str,
        job_id: str,
        round_number: int,
        data: bytes,
        *,
        num_samples: int,
        measured_peak_bytes: int = 0,
        train_loss: float = 0.0,
        train_duration_s: float = 0.0,
    ) -> list[fleet_pb2.UploadUpdateRequest]:
        """An update's stream: its header (with the SHA-256 of ``data``), then its chunks."""
        header = fleet_pb2.UpdateHeader(
            node_id=self.node_id,
            task_id=task_id,
            job_id=job_id,
            round=round_number,
            num_samples=num_samples,
            measured_peak_bytes=measured_peak_bytes,
            train_loss=train_loss,
            train_duration_s=train_duration_s,
            blob=blob_info(data),
        )
        return [
            fleet_pb2.UploadUpdateRequest(header=header),
            *(fleet_pb2.UploadUpdateRequest(chunk=c) for c in split(data, self.chunk_bytes)),
        ]

    def upload_update_messages(
        self, messages: Sequence[fleet_pb2.UploadUpdateRequest]
    ) -> fleet_pb2.UploadUpdateResponse:
        """Send an update stream as given (tests send broken ones on purpose)."""
        response: fleet_pb2.UploadUpdateResponse = self._stub.UploadUpdate(
            iter(messages), metadata=self._metadata, timeout=self.timeout_s
        )
        return response

    def report_failure(
        self,
        task_id: str,
        kind: fleet_pb2.FailureKind.ValueType,
        message: str,
        *,
        job_id: str = "",
        round_number: int = 0,
        observed_peak_bytes: int = 0,
    ) -> fleet_pb2.ReportFailureResponse:
        response: fleet_pb2.ReportFailureResponse = self._stub.ReportFailure(
            fleet_pb2.ReportFailureRequest(
                node_id=self.node_id,
                task_id=task_id,
                job_id=job_id,
                round=round_number,
                kind=kind,
                observed_peak_bytes=observed_peak_bytes,
                message=message,
            ),
            metadata=self._metadata,
            timeout=self.timeout_s,
        )
        return response


def receive_weights(stream: Iterator[fleet_pb2.DownloadWeightsResponse]) -> bytes:
    """Header first, then chunks; the bytes once they match the header (``TransferError``)."""
    first = next(stream)
    if not first.HasField("header"):
        raise ValueError("the stream did not start with a header")
    return join(first.header.blob, (message.chunk for message in stream))
