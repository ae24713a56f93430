"""JobsService: the operators' side of the protocol (admin token in ``authorization``)."""

from __future__ import annotations

import json

import grpc

from orchestrator.errors import ErrorCode
from orchestrator.handlers import jobs
from orchestrator.handlers.fleet import FleetState
from orchestrator.job_spec import LARGEST, JobSpec
from orchestrator.servicers.convert import bearer_token, hardware_to_proto
from orchestrator.storage.records import JobRecord, JobStatus
from protos.edgefleet.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

_OPTIMIZERS = {common_pb2.OPTIMIZER_SGD: "sgd", common_pb2.OPTIMIZER_ADAM: "adam"}
_RULES = {
    jobs_pb2.AGGREGATION_RULE_FEDAVG: "fedavg",
    jobs_pb2.AGGREGATION_RULE_MEDIAN: "median",
    jobs_pb2.AGGREGATION_RULE_TRIMMED_MEAN: "trimmed_mean",
}
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
        "optimizer": _OPTIMIZERS.get(spec.optimizer),
        "fraction_per_round": spec.node_fraction or None,
        "min_nodes": spec.min_nodes or None,
        "round_deadline_s": spec.round_deadline_s or None,
        "aggregation": _RULES.get(spec.aggregation),
        "trim_fraction": spec.trim_fraction if spec.HasField("trim_fraction") else None,
        "temperature": spec.temperature if spec.HasField("temperature") else None,
    }
    data.update({key: value for key, value in optional.items() if value is not None})
    return data


def spec_to_proto(spec: JobSpec) -> jobs_pb2.JobSpec:
    optimizers = {name: value for value, name in _OPTIMIZERS.items()}
    rules = {name: value for value, name in _RULES.items()}
    return jobs_pb2.JobSpec(
        name=spec.name,
        student_model=spec.student,
        teacher_model=spec.teacher or "",
        image_size=spec.image_size,
        batch_size=spec.batch_size or 0,
        num_rounds=spec.rounds,
        local_steps=spec.local_steps,
        optimizer=optimizers[spec.optimizer],
        learning_rate=spec.learning_rate,
        node_fraction=spec.fraction_per_round,
        min_nodes=spec.min_nodes,
        round_deadline_s=spec.round_deadline_s,
        aggregation=rules[spec.aggregation.value],
        trim_fraction=spec.trim_fraction,
        temperature=spec.temperature,
    )


def _job(record: JobRecord) -> jobs_pb2.Job:
    spec = JobSpec.from_dict(json.loads(record.spec_json))
    updated = record.finished_at or record.created_at
    return jobs_pb2.Job(
        job_id=record.id,
        spec=spec_to_proto(spec),
        state=_STATES[record.status],
        created_unix_s=record.created_at.timestamp(),
        updated_unix_s=updated.timestamp(),
    )


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires."""

    def __init__(self, state: FleetState) -> None:
        self._state = state

    def _check_admin(self, context: grpc.ServicerContext) -> None:
        token = bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        jobs.check_admin(self._state, token)

    def SubmitJob(
        self, request: jobs_pb2.SubmitJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.SubmitJobResponse:
        jobs.check_admin(
            self._state, bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        )
        record, _ = jobs.submit(self._state, spec_to_fields(request.spec))
        return jobs_pb2.SubmitJobResponse(job=_job(record))

    def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.GetJobResponse:
        jobs.check_admin(
            self._state, bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        )
        return jobs_pb2.GetJobResponse(job=_job(jobs.get(self._state, request.job_id)))

    def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        jobs.check_admin(
            self._state, bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        )
        wanted = {state: status for status, state in _STATES.items()}.get(request.state)
        records, token = jobs.page(self._state, wanted, request.page_size, request.page_token)
        return jobs_pb2.ListJobsResponse(
            jobs=[_job(record) for record in records], next_page_token=token
        )

    def ListNodes(
        self, request: jobs_pb2.ListNodesRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListNodesResponse:
        jobs.check_admin(
            self._state, bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        )
        listed = []
        for node, models, alive in jobs.nodes(self._state, request.hardware_class):
            listed.append(
                jobs_pb2.Node(
                    node_id=node.id,
                    node_name=node.name,
                    hardware=hardware_to_proto(node.hardware),
                    hardware_class=node.hardware_class,
                    registered_unix_s=node.enrolled_at.timestamp(),
                    last_heartbeat_unix_s=node.last_seen_at.timestamp(),
                    alive=alive,
                    memory_models=[
                        jobs_pb2.MemoryModelStatus(
                            model_name=model.model,
                            image_size=model.image_size or 0,
                            state=jobs_pb2.MEMORY_MODEL_STATE_READY,
                        )
                        for model in models
                    ],
                )
            )
        return jobs_pb2.ListNodesResponse(nodes=listed)

    def CancelJob(
        self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.CancelJobResponse:
        jobs.check_admin(
            self._state, bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token")
        )
        return jobs_pb2.CancelJobResponse(job=_job(jobs.cancel(self._state, request.job_id)))
