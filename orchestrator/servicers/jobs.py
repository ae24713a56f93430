"""JobsService: the operators' side of the protocol (admin token in ``authorization``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc

from orchestrator.errors import ErrorCode, FleetError, Rejection
from orchestrator.events import EventKind
from orchestrator.handlers import jobs
from orchestrator.job_spec import LARGEST, JobSpec
from orchestrator.planning import StoredPlan
from orchestrator.servicers.convert import (
    blob_header_from_proto,
    chunks_from,
    hardware_to_proto,
    plan_to_proto,
    weights_stream,
)
from orchestrator.state import FleetState
from orchestrator.storage.records import EventRecord, JobRecord, JobStatus, NodePlanRecord
from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2, jobs_pb2_grpc
from protos.vocabulary import (
    AGGREGATION_RULE,
    FAILURE_KIND,
    OPTIMIZER,
    ROUND_OUTCOME,
)

_STATES = {
    JobStatus.PENDING: jobs_pb2.JOB_STATE_PENDING,
    JobStatus.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobStatus.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobStatus.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobStatus.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}


def spec_to_fields(spec: jobs_pb2.JobSpec) -> dict[str, object]:
    """The job-file fields of a protocol ``JobSpec``; proto3 zeros mean "not set"."""
    data: dict[str, object] = {
        "name": spec.name,
        "student": spec.student_model,
        "image_size": spec.image_size,
        "batch_size": spec.batch_size or LARGEST,
        "rounds": spec.num_rounds,
        "local_steps": spec.local_steps,
        "learning_rate": spec.learning_rate,
    }
    optional = {
        "teacher": spec.teacher_model or None,
        "optimizer": OPTIMIZER.name_or_none(spec.optimizer),
        "fraction_per_round": spec.node_fraction or None,
        "min_nodes": spec.min_nodes or None,
        "round_deadline_s": spec.round_deadline_s or None,
        "aggregation": AGGREGATION_RULE.name_or_none(spec.aggregation),
        "trim_fraction": spec.trim_fraction if spec.HasField("trim_fraction") else None,
        "temperature": spec.temperature if spec.HasField("temperature") else None,
        "initial_weights_sha256_hex": spec.initial_weights_sha256_hex or None,
        "num_classes": spec.num_classes or None,
    }
    data.update({key: value for key, value in optional.items() if value is not None})
    return data


def spec_to_proto(spec: JobSpec) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        name=spec.name,
        student_model=spec.student,
        teacher_model=spec.teacher or "",
        image_size=spec.image_size,
        batch_size=spec.batch_size or 0,
        num_rounds=spec.rounds,
        local_steps=spec.local_steps,
        optimizer=OPTIMIZER.to_proto(spec.optimizer),
        learning_rate=spec.learning_rate,
        node_fraction=spec.fraction_per_round,
        min_nodes=spec.min_nodes,
        round_deadline_s=spec.round_deadline_s,
        aggregation=AGGREGATION_RULE.to_proto(spec.aggregation),
        trim_fraction=spec.trim_fraction,
        temperature=spec.temperature,
        initial_weights_sha256_hex=spec.initial_weights_sha256_hex,
        num_classes=spec.num_classes,
    )


_MODEL_STATES = {
    "missing": jobs_pb2.MEMORY_MODEL_STATE_MISSING,
    "profiling": jobs_pb2.MEMORY_MODEL_STATE_PROFILING,
    "ready": jobs_pb2.MEMORY_MODEL_STATE_READY,
    "failed": jobs_pb2.MEMORY_MODEL_STATE_FAILED,
}
_REJECTION_CODES = {reason.value: reason.proto_code for reason in Rejection}


def _job(state: FleetState, record: JobRecord) -> jobs_pb2.Job:
    spec = JobSpec.from_stored(record.spec_json)
    progress = jobs.progress(state, record)
    return jobs_pb2.Job(
        job_id=record.id,
        spec=spec_to_proto(spec),
        state=_STATES[record.status],
        current_round=progress.current_round,
        num_rounds_completed=progress.rounds_completed,
        created_unix_s=record.created_at.timestamp(),
        updated_unix_s=record.updated_at.timestamp(),
        model_sha256_hex=progress.model_sha256_hex,
        message=record.message,
    )


def event_to_proto(event: EventRecord) -> jobs_pb2.JobEvent:
    """A stored event (``orchestrator.events``) as the protocol's ``JobEvent``."""
    data = json.loads(event.payload_json)
    message = jobs_pb2.JobEvent(
        sequence=event.sequence, job_id=event.job_id, time_unix_s=event.created_at.timestamp()
    )
    kind = EventKind(event.kind)
    if kind is EventKind.STATE_CHANGED:
        message.state_changed.CopyFrom(
            jobs_pb2.JobStateChanged(
                state=_STATES[JobStatus(data["state"])], message=data.get("message", "")
            )
        )
    elif kind is EventKind.ROUND_STARTED:
        message.round_started.CopyFrom(
            jobs_pb2.RoundStarted(
                round=data["round"],
                node_ids=data["node_ids"],
                deadline_unix_s=data["deadline_unix_s"],
            )
        )
    elif kind is EventKind.UPDATE_RECEIVED:
        rejection = None
        if not data["accepted"]:
            rejection = common_pb2.ErrorDetail(
                code=_REJECTION_CODES[data["reason"]],  # type: ignore[arg-type]
                message=data.get("message", ""),
            )
        message.update_received.CopyFrom(
            jobs_pb2.UpdateReceived(
                round=data["round"],
                node_id=data["node_id"],
                accepted=data["accepted"],
                rejection=rejection,
                num_samples=data["num_samples"],
                measured_peak_bytes=data.get("measured_peak_bytes", 0),
                predicted_peak_bytes=data.get("predicted_peak_bytes", 0),
                train_loss=data.get("train_loss", 0.0),
            )
        )
    elif kind is EventKind.ROUND_COMPLETED:
        message.round_completed.CopyFrom(
            jobs_pb2.RoundCompleted(
                round=data["round"],
                outcome=ROUND_OUTCOME.to_proto_or(
                    data["outcome"], jobs_pb2.ROUND_OUTCOME_UNSPECIFIED
                ),
                num_updates=data["num_updates"],
                model_sha256_hex=data["model_sha256_hex"],
                duration_s=data["duration_s"],
                aggregation_s=data["aggregation_s"],
            )
        )
    else:
        message.node_failed.CopyFrom(
            jobs_pb2.NodeFailed(
                round=data["round"],
                node_id=data["node_id"],
                kind=FAILURE_KIND.to_proto_or(data["kind"], fleet_pb2.FAILURE_KIND_INTERNAL),
                message=data["message"],
            )
        )
    return message


def _node_plan(plan: NodePlanRecord) -> jobs_pb2.NodePlan:
    if not plan.fits or plan.plan_json is None:
        return jobs_pb2.NodePlan(
            job_id=plan.job_id,
            fits=False,
            shortfall_bytes=plan.shortfall_bytes,
            message=plan.message,
        )
    return jobs_pb2.NodePlan(
        job_id=plan.job_id, fits=True, plan=plan_to_proto(StoredPlan.from_json(plan.plan_json))
    )


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires.

    The admin token is checked before any of them runs (``AdminInterceptor``).
    """

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def SubmitJob(
        self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.SubmitJobResponse:
        record, _ = jobs.submit(self._state, spec_to_fields(request.spec))
        return jobs_pb2.SubmitJobResponse(job=_job(self._state, record))

    def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.GetJobResponse:
        return jobs_pb2.GetJobResponse(job=_job(self._state, jobs.get(self._state, request.job_id)))

    def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        wanted = {state: status for status, state in _STATES.items()}.get(request.state)
        records, token = jobs.page(self._state, wanted, request.page_size, request.page_token)
        return jobs_pb2.ListJobsResponse(
            jobs=[_job(self._state, record) for record in records], next_page_token=token
        )

    def CancelJob(
        self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.CancelJobResponse:
        record = jobs.cancel(self._state, request.job_id, request.reason)
        return jobs_pb2.CancelJobResponse(job=_job(self._state, record))

    def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[jobs_pb2.JobEvent]:
        for event in jobs.watch(self._state, request.job_id, request.after_sequence):
            if not context.is_active():
                return
            yield event_to_proto(event)

    def ListNodes(
        self, request: jobs_pb2.ListNodesRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListNodesResponse:
        listed = []
        for view in jobs.nodes(self._state, request.hardware_class):
            node = view.node
            listed.append(
                jobs_pb2.Node(
                    node_id=node.id,
                    node_name=node.name,
                    hardware=hardware_to_proto(node.hardware),
                    hardware_class=node.hardware_class,
                    agent_version=node.agent_version,
                    registered_unix_s=node.enrolled_at.timestamp(),
                    last_heartbeat_unix_s=node.last_seen_at.timestamp(),
                    alive=view.alive,
                    current_task_id=node.current_task_id or "",
                    memory_models=[
                        jobs_pb2.MemoryModelStatus(
                            model_name=status.model,
                            image_size=status.image_size,
                            state=_MODEL_STATES[status.state],
                            message=status.message,
                        )
                        for status in view.models
                    ],
                    plans=[_node_plan(plan) for plan in view.plans],
                )
            )
        return jobs_pb2.ListNodesResponse(nodes=listed)

    def UploadWeights(
        self,
        request_iterator: Iterator[jobs_pb2.UploadWeightsRequest],
        context: grpc.ServicerContext,
    ) -> jobs_pb2.UploadWeightsResponse:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise FleetError(ErrorCode.INVALID_REQUEST, "the first message must be the header")
        header = blob_header_from_proto(first.header)
        digest = jobs.upload_weights(self._state, header, chunks_from(request_iterator))
        return jobs_pb2.UploadWeightsResponse(sha256_hex=digest, received_bytes=header.total_bytes)

    def DownloadModel(
        self, request: jobs_pb2.DownloadModelRequest, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.DownloadWeightsResponse]:
        version = request.version if request.HasField("version") else None
        found, blob = jobs.download_model(
            self._state, request.job_id, version, request.max_chunk_bytes
        )
        yield from weights_stream(request.job_id, found, blob)
