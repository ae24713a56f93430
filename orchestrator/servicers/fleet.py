"""FleetService: the agents' side of the protocol. Decode, call a handler, encode."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from checkpointing.planning.chain import Chain, ChainError
from orchestrator.errors import ErrorCode, FleetError
from orchestrator.handlers import fleet, tasks, updates
from orchestrator.interceptors import bearer_token, until_cancelled
from orchestrator.outcomes import FailureKind
from orchestrator.planning import ProfileSample
from orchestrator.servicers.convert import (
    blob_header_from_proto,
    chunks_from,
    hardware_from_proto,
    plan_to_proto,
    weights_stream,
)
from orchestrator.state import FleetState
from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc
from protos.vocabulary import FAILURE_KIND, OPTIMIZER


def _credential(context: grpc.ServicerContext) -> str:
    return bearer_token(context, ErrorCode.BAD_NODE_CREDENTIAL, "credential")


def _sample(index: int, profile: fleet_pb2.ChainProfile) -> ProfileSample:
    try:
        chain = Chain(
            fw=tuple(profile.fw_s),
            bw=tuple(profile.bw_s),
            cw=tuple(float(v) for v in profile.cw_bytes),
            cbw=tuple(float(v) for v in profile.cbw_bytes),
            ftmp=tuple(float(v) for v in profile.ftmp_bytes),
            btmp=tuple(float(v) for v in profile.btmp_bytes),
            saves_output=tuple(profile.saves_output) or None,
            ftmp_nograd=tuple(float(v) for v in profile.ftmp_nograd_bytes) or None,
        )
    except ChainError as exc:
        raise FleetError(ErrorCode.INVALID_REQUEST, str(exc), f"profiles[{index}]") from None
    if len(profile.stage_names) != chain.length:
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            f"{len(profile.stage_names)} stage names for {chain.length} stages",
            f"profiles[{index}].stage_names",
        )
    if profile.batch_size < 1 or profile.image_size < 1:
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            "batch_size and image_size must be positive",
            f"profiles[{index}]",
        )
    return ProfileSample(profile.batch_size, profile.image_size, tuple(profile.stage_names), chain)


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires."""

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def Register(
        self, request: fleet_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.RegisterResponse:
        if not request.HasField("hardware"):
            raise FleetError(ErrorCode.INVALID_REQUEST, "hardware is required", "hardware")
        registration = fleet.register(
            self._state,
            request.enrollment_token,
            request.node_name or "board",
            hardware_from_proto(request.hardware),
            agent_version=request.agent_version,
            hardware_class=request.hardware_class,
        )
        return fleet_pb2.RegisterResponse(
            node_id=registration.node_id,
            node_credential=registration.credential,
            hardware_class=registration.hardware_class,
            heartbeat_interval_s=self._state.config.heartbeat_timeout_s / 3,
            max_chunk_bytes=self._state.config.chunk_bytes,
        )

    def Heartbeat(
        self, request: fleet_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.HeartbeatResponse:
        beat = fleet.heartbeat(
            self._state,
            request.node_id,
            _credential(context),
            current_task_id=request.current_task_id,
            rss_bytes=request.rss_bytes,
        )
        return fleet_pb2.HeartbeatResponse(
            next_heartbeat_s=beat.next_heartbeat_s, cancelled_job_ids=beat.cancelled_job_ids
        )

    def PullTask(
        self, request: fleet_pb2.PullTaskRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.PullTaskResponse:
        task = tasks.pull_task(self._state, request.node_id, _credential(context))
        if isinstance(task, tasks.NoTask):
            return fleet_pb2.PullTaskResponse(
                none=fleet_pb2.NoTask(retry_after_s=task.retry_after_s)
            )
        if isinstance(task, tasks.ProfileTask):
            record = task.record
            return fleet_pb2.PullTaskResponse(
                task_id=task.task_id,
                profile=fleet_pb2.ProfileTask(
                    model_name=record.model,
                    batch_sizes=record.batch_sizes,
                    image_sizes=record.image_sizes,
                    job_id=record.job_id or "",
                    num_classes=task.num_classes,
                    calibrate=task.calibrate,
                ),
            )
        spec = task.spec
        plan = plan_to_proto(task.plan, task.assignment.predicted_peak_bytes)
        return fleet_pb2.PullTaskResponse(
            task_id=task.task_id,
            train=fleet_pb2.TrainTask(
                job_id=task.job_id,
                round=task.round,
                model_name=spec.student,
                image_size=spec.image_size,
                batch_size=task.assignment.batch_size,
                accumulation_steps=task.assignment.accumulation_steps,
                schedule=plan.schedule,
                local_steps=spec.local_steps,
                optimizer=OPTIMIZER.to_proto(spec.optimizer),
                learning_rate=spec.learning_rate,
                teacher_model_name=spec.teacher or "",
                temperature=spec.temperature,
                plan=plan,
                weights_sha256_hex=task.weights_sha256_hex,
                deadline_unix_s=task.round_record.deadline_at.timestamp(),
                num_classes=spec.num_classes,
            ),
        )

    def UploadProfile(
        self, request: fleet_pb2.UploadProfileRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.UploadProfileResponse:
        upload = tasks.ProfileUpload(
            task_id=request.task_id,
            model_name=request.model_name,
            parameter_bytes=request.parameter_bytes,
            buffer_bytes=request.buffer_bytes,
            num_classes=request.num_classes,
            samples=[_sample(i, profile) for i, profile in enumerate(request.profiles)],
            allocator_overhead_fraction=request.allocator_overhead_fraction
            if request.HasField("allocator_overhead_fraction")
            else None,
            allocator_overhead_bytes=request.allocator_overhead_bytes,
            model_library_bytes=request.model_library_bytes,
        )
        reason = tasks.upload_profile(self._state, request.node_id, _credential(context), upload)
        if reason is None:
            return fleet_pb2.UploadProfileResponse(accepted=True)
        return fleet_pb2.UploadProfileResponse(
            accepted=False,
            rejection=common_pb2.ErrorDetail(
                code=common_pb2.ERROR_CODE_INVALID_ARGUMENT, message=reason, field="profiles"
            ),
        )

    def DownloadWeights(
        self, request: fleet_pb2.DownloadWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.DownloadWeightsResponse]:
        blob = updates.download_weights(
            self._state,
            request.node_id,
            _credential(context),
            request.job_id,
            request.round,
            request.max_chunk_bytes,
        )
        yield from weights_stream(request.job_id, request.round, blob)

    def UploadUpdate(
        self,
        request_iterator: Iterator[fleet_pb2.UploadUpdateRequest],
        context: grpc.ServicerContext,
    ) -> fleet_pb2.UploadUpdateResponse:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise FleetError(ErrorCode.INVALID_REQUEST, "the first message must be the header")
        header = first.header
        verdict = updates.upload_update(
            self._state,
            _credential(context),
            updates.UpdateHeader(
                node_id=header.node_id,
                task_id=header.task_id,
                job_id=header.job_id,
                round=header.round,
                num_samples=header.num_samples,
                measured_peak_bytes=header.measured_peak_bytes,
                train_loss=header.train_loss,
                train_duration_s=header.train_duration_s,
                blob=blob_header_from_proto(header.blob),
            ),
            chunks_from(until_cancelled(request_iterator, context)),
        )
        return fleet_pb2.UploadUpdateResponse(
            accepted=verdict.accepted,
            rejection=verdict.rejection.to_detail() if verdict.rejection else None,
            received_bytes=verdict.received_bytes,
        )

    def ReportFailure(
        self, request: fleet_pb2.ReportFailureRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.ReportFailureResponse:
        retry_after_s = tasks.report_failure(
            self._state,
            request.node_id,
            _credential(context),
            tasks.FailureReport(
                task_id=request.task_id,
                kind=FailureKind(FAILURE_KIND.name_or_none(request.kind) or FailureKind.INTERNAL),
                observed_peak_bytes=request.observed_peak_bytes,
                message=request.message,
            ),
        )
        return fleet_pb2.ReportFailureResponse(retry_after_s=retry_after_s)
