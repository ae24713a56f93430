"""The committed stubs match the .proto files, every message is documented and round-trips, and
the stubs work over a real socket."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pb2, message
from grpc_tools import protoc

from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, jobs_pb2
from protos.transfer import DEFAULT_CHUNK_BYTES, SAFETENSORS

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "scripts" / "gen_protos.py"
PROTO_DIR = Path("protos/edgefleet/v1")
MODULES = (common_pb2, fleet_pb2, jobs_pb2)
GRPC_DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def _copy_protos(destination: Path) -> Path:
    shutil.copytree(REPO_ROOT / "protos", destination / "protos")
    return destination


# --- drift ------------------------------------------------------------------------------------


def test_committed_stubs_match_the_proto_files() -> None:
    completed = _run_script("--check")

    assert completed.returncode == 0, completed.stderr


def test_check_fails_and_names_the_files_when_a_proto_changes(tmp_path: Path) -> None:
    root = _copy_protos(tmp_path)
    common = root / PROTO_DIR / "common.proto"
    common.write_text(common.read_text() + "\n// A new message.\nmessage Added {}\n")

    completed = _run_script("--check", "--root", str(root))

    assert completed.returncode == 1
    drifting = {line.strip() for line in completed.stderr.splitlines()}
    assert drifting >= {str(PROTO_DIR / "common_pb2.py"), str(PROTO_DIR / "common_pb2.pyi")}
    assert str(PROTO_DIR / "fleet_pb2.py") not in drifting


def test_check_fails_on_an_edited_or_a_stale_generated_file(tmp_path: Path) -> None:
    root = _copy_protos(tmp_path)
    edited = root / PROTO_DIR / "fleet_pb2_grpc.py"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    (root / PROTO_DIR / "removed_pb2.py").write_text("# from a deleted .proto\n")

    completed = _run_script("--check", "--root", str(root))

    assert completed.returncode == 1
    drifting = {line.strip() for line in completed.stderr.splitlines()}
    assert drifting >= {str(PROTO_DIR / "fleet_pb2_grpc.py"), str(PROTO_DIR / "removed_pb2.py")}
    assert str(PROTO_DIR / "fleet_pb2.py") not in drifting


def test_generation_repairs_drift_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = _copy_protos(tmp_path)
    (root / PROTO_DIR / "jobs_pb2.pyi").write_text("# broken\n")
    (root / PROTO_DIR / "removed_pb2.pyi").write_text("# stale\n")

    first = _run_script("--root", str(root))
    second = _run_script("--root", str(root))
    check = _run_script("--check", "--root", str(root))

    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [
        "wrote",
        str(PROTO_DIR / "jobs_pb2.pyi"),
        "wrote",
        str(PROTO_DIR / "removed_pb2.pyi"),
    ]
    assert not (root / PROTO_DIR / "removed_pb2.pyi").exists()
    assert second.returncode == 0, second.stderr
    assert second.stdout == "", "generation must be deterministic"
    assert check.returncode == 0, check.stderr


# --- documentation ----------------------------------------------------------------------------


def _described_files(root: Path, out_dir: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    out = out_dir / "protos.binpb"
    protos = sorted(str(path) for path in (root / PROTO_DIR).glob("*.proto"))
    status = protoc.main(
        [
            "protoc",
            f"-I{root}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *protos,
        ]
    )
    assert status == 0
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def _declarations(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    # Paths as descriptor.proto numbers them: a file's message_type is field 4, enum_type 5,
    # service 6; a message's field 2, nested_type 3, enum_type 4; an enum's value 2; a service's
    # method 2.
    def of_enum(
        enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        yield path, name
        for i, value in enumerate(enum.value):
            yield (*path, 2, i), f"{name}.{value.name}"

    def of_message(
        msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
    ) -> Iterator[tuple[tuple[int, ...], str]]:
        yield path, name
        for i, field in enumerate(msg.field):
            yield (*path, 2, i), f"{name}.{field.name}"
        for i, nested in enumerate(msg.nested_type):
            yield from of_message(nested, (*path, 3, i), f"{name}.{nested.name}")
        for i, enum in enumerate(msg.enum_type):
            yield from of_enum(enum, (*path, 4, i), f"{name}.{enum.name}")

    for i, msg in enumerate(file.message_type):
        yield from of_message(msg, (4, i), msg.name)
    for i, enum in enumerate(file.enum_type):
        yield from of_enum(enum, (5, i), enum.name)
    for i, service in enumerate(file.service):
        yield (6, i), service.name
        for j, method in enumerate(service.method):
            yield (6, i, 2, j), f"{service.name}.{method.name}"


def _undocumented(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    undocumented = []
    for file in files:
        comments = {
            tuple(location.path): location.leading_comments + location.trailing_comments
            for location in file.source_code_info.location
        }
        undocumented += [
            f"{file.name}: {name}"
            for path, name in _declarations(file)
            if not comments.get(path, "").strip()
        ]
    return undocumented


def test_every_service_method_message_field_and_enum_value_has_a_comment(tmp_path: Path) -> None:
    files = _described_files(REPO_ROOT, tmp_path)

    undocumented = _undocumented(files)

    assert len(files) == 3
    assert undocumented == []


def test_an_undocumented_field_is_found(tmp_path: Path) -> None:
    root = _copy_protos(tmp_path)
    fleet = root / PROTO_DIR / "fleet.proto"
    text = fleet.read_text()
    comment = (
        "  // A human-readable name for listings (the board's hostname, say); not an identity.\n"
    )
    assert comment in text
    fleet.write_text(text.replace(comment, ""))

    undocumented = _undocumented(_described_files(root, tmp_path))

    assert undocumented == ["protos/edgefleet/v1/fleet.proto: RegisterRequest.node_name"]


# --- round trips ------------------------------------------------------------------------------

_SAMPLES: dict[int, object] = {
    descriptor.FieldDescriptor.CPPTYPE_INT32: -(2**31),
    descriptor.FieldDescriptor.CPPTYPE_INT64: -(2**63),
    descriptor.FieldDescriptor.CPPTYPE_UINT32: 2**32 - 1,
    descriptor.FieldDescriptor.CPPTYPE_UINT64: 2**64 - 1,
    descriptor.FieldDescriptor.CPPTYPE_DOUBLE: 0.1,
    descriptor.FieldDescriptor.CPPTYPE_BOOL: True,
}


def _real_oneof(field: descriptor.FieldDescriptor) -> descriptor.OneofDescriptor | None:
    # proto3 `optional` wraps its field in a synthetic one-field oneof named "_<field>"; that is
    # presence tracking, not a choice.
    oneof = field.containing_oneof
    if oneof is None or (len(oneof.fields) == 1 and oneof.name == f"_{field.name}"):
        return None
    return oneof


def _sample(field: descriptor.FieldDescriptor) -> object:
    if field.type == descriptor.FieldDescriptor.TYPE_BYTES:
        return bytes(range(256))
    if field.type == descriptor.FieldDescriptor.TYPE_STRING:
        return f"{field.name}-é"
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1].number
    return _SAMPLES[field.cpp_type]


def _fields(instance: message.Message) -> Sequence[descriptor.FieldDescriptor]:
    # The upb runtime's descriptors pass for the pure-Python ones (their metaclass says so), which
    # the type stubs cannot know.
    described = instance.DESCRIPTOR
    assert isinstance(described, descriptor.Descriptor)
    return described.fields


def _filled_oneof_members(instance: message.Message, chosen: set[str]) -> set[str]:
    """Of each oneof of ``instance``, the member in ``chosen``, or the first."""
    members = set()
    for field in _fields(instance):
        oneof = _real_oneof(field)
        if oneof is not None:
            names = {member.name for member in oneof.fields}
            members |= (names & chosen) or {oneof.fields[0].name}
    return members


def _fill(instance: message.Message, chosen: Iterable[str] = ()) -> None:
    """Set every field to a non-default value; of each oneof, the member in ``chosen`` or the
    first."""
    filled_members = _filled_oneof_members(instance, set(chosen))
    for field in _fields(instance):
        if _real_oneof(field) is not None and field.name not in filled_members:
            continue
        value = getattr(instance, field.name)
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for _ in range(2):
                    _fill(value.add())
            else:
                value.SetInParent()
                _fill(value)
        elif field.is_repeated:
            value.extend([_sample(field)] * 2)
        else:
            setattr(instance, field.name, _sample(field))


def _variants() -> Iterator[tuple[type[message.Message], str | None]]:
    for module in MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            cls = getattr(module, name)
            oneofs = [o for o in cls.DESCRIPTOR.oneofs if _real_oneof(o.fields[0]) is not None]
            members = [member.name for oneof in oneofs for member in oneof.fields]
            for member in members or [None]:
                yield cls, member


@pytest.mark.parametrize(
    ("cls", "member"),
    list(_variants()),
    ids=lambda value: value.__name__ if isinstance(value, type) else str(value),
)
def test_every_message_round_trips_with_every_field_set(
    cls: type[message.Message], member: str | None
) -> None:
    original = cls()
    _fill(original, [member] if member else [])

    parsed = cls.FromString(original.SerializeToString())

    assert parsed == original
    set_names = {field.name for field, _ in parsed.ListFields()}
    plain = {field.name for field in _fields(parsed) if _real_oneof(field) is None}
    oneofs = {oneof.name for field in _fields(parsed) if (oneof := _real_oneof(field)) is not None}
    chosen = {parsed.WhichOneof(name) for name in oneofs}
    assert set_names == plain | chosen
    assert member is None or member in chosen


def test_every_rpc_request_and_response_is_a_generated_message() -> None:
    services = [
        fleet_pb2.DESCRIPTOR.services_by_name["FleetService"],
        jobs_pb2.DESCRIPTOR.services_by_name["JobsService"],
    ]
    round_tripped = set()

    for service in services:
        for method in service.methods:
            for message_type in (method.input_type, method.output_type):
                module = {m.DESCRIPTOR.name: m for m in MODULES}[message_type.file.name]
                cls = getattr(module, message_type.name)
                instance = cls()
                _fill(instance)
                assert cls.FromString(instance.SerializeToString()) == instance
                round_tripped.add(message_type.full_name)

    assert {"edgefleet.v1.RegisterRequest", "edgefleet.v1.JobEvent"} <= round_tripped
    assert len(services[0].methods) == 7 and len(services[1].methods) == 8


def test_a_default_chunk_stays_far_below_grpcs_message_limit() -> None:
    request = fleet_pb2.UploadUpdateRequest(
        chunk=common_pb2.Chunk(offset_bytes=2**40, data=b"\xff" * DEFAULT_CHUNK_BYTES)
    )

    size_bytes = request.ByteSize()

    assert DEFAULT_CHUNK_BYTES < size_bytes < GRPC_DEFAULT_MAX_MESSAGE_BYTES // 2


def test_a_pulled_train_task_reads_back_as_sent() -> None:
    response = fleet_pb2.PullTaskResponse(
        task_id="t-1",
        train=fleet_pb2.TrainTask(
            job_id="j-1",
            round=3,
            model_name="mobilenet_v2",
            image_size=224,
            batch_size=12,
            accumulation_steps=2,
            schedule=["Fe_0", "Fn_1", "Fe_2", "Loss", "Bwd_2", "Fe_1", "Bwd_1", "Bwd_0"],
            local_steps=50,
            optimizer=common_pb2.OPTIMIZER_ADAM,
            learning_rate=1e-3,
            teacher_model_name="resnet50",
            temperature=4.0,
        ),
    )

    parsed = fleet_pb2.PullTaskResponse.FromString(response.SerializeToString())

    assert parsed.WhichOneof("task") == "train"
    assert list(parsed.train.schedule) == list(response.train.schedule)
    assert parsed.train.optimizer == common_pb2.OPTIMIZER_ADAM
    assert not parsed.HasField("profile")


# --- over a real socket -----------------------------------------------------------------------


class _Fleet(fleet_pb2_grpc.FleetServiceServicer):
    """Just enough of a coordinator to show requests and streams arrive intact."""

    def __init__(self, weights: bytes, chunk_bytes: int) -> None:
        self._weights = weights
        self._chunk_bytes = chunk_bytes

    def Register(
        self, request: fleet_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.RegisterResponse:
        if request.enrollment_token != "enrol-me":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown enrollment token")
        return fleet_pb2.RegisterResponse(
            node_id=f"node-{request.node_name}",
            node_credential="secret",
            hardware_class=f"{request.hardware.arch}-{request.hardware.ram_bytes}",
            heartbeat_interval_s=5.0,
            max_chunk_bytes=self._chunk_bytes,
        )

    def DownloadWeights(
        self, request: fleet_pb2.DownloadWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.DownloadWeightsResponse]:
        yield fleet_pb2.DownloadWeightsResponse(
            header=fleet_pb2.WeightsHeader(
                job_id=request.job_id, round=request.round, blob=_blob_info(self._weights)
            )
        )
        chunk_bytes = min(request.max_chunk_bytes or self._chunk_bytes, self._chunk_bytes)
        for offset in range(0, len(self._weights), chunk_bytes):
            data = self._weights[offset : offset + chunk_bytes]
            yield fleet_pb2.DownloadWeightsResponse(
                chunk=common_pb2.Chunk(offset_bytes=offset, data=data)
            )

    def UploadUpdate(
        self,
        request_iterator: Iterator[fleet_pb2.UploadUpdateRequest],
        context: grpc.ServicerContext,
    ) -> fleet_pb2.UploadUpdateResponse:
        header = next(request_iterator).header
        digest = hashlib.sha256()
        received_bytes = 0
        for request in request_iterator:
            assert request.chunk.offset_bytes == received_bytes
            digest.update(request.chunk.data)
            received_bytes += len(request.chunk.data)
        if digest.hexdigest() != header.blob.sha256_hex:
            return fleet_pb2.UploadUpdateResponse(
                accepted=False,
                rejection=common_pb2.ErrorDetail(
                    code=common_pb2.ERROR_CODE_CHECKSUM_MISMATCH, message="checksum mismatch"
                ),
                received_bytes=received_bytes,
            )
        return fleet_pb2.UploadUpdateResponse(accepted=True, received_bytes=received_bytes)

    # The rest of the service is not what these tests are about.
    def Heartbeat(
        self, request: fleet_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.HeartbeatResponse:
        _unimplemented(context)

    def PullTask(
        self, request: fleet_pb2.PullTaskRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.PullTaskResponse:
        _unimplemented(context)

    def UploadProfile(
        self, request: fleet_pb2.UploadProfileRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.UploadProfileResponse:
        _unimplemented(context)

    def ReportFailure(
        self, request: fleet_pb2.ReportFailureRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.ReportFailureResponse:
        _unimplemented(context)


def _unimplemented(context: grpc.ServicerContext) -> NoReturn:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this test servicer")
    raise AssertionError("abort() raises")


def _blob_info(data: bytes) -> common_pb2.BlobInfo:
    return common_pb2.BlobInfo(
        format=SAFETENSORS, total_bytes=len(data), sha256_hex=hashlib.sha256(data).hexdigest()
    )


@contextmanager
def _fleet_stub(servicer: _Fleet) -> Iterator[fleet_pb2_grpc.FleetServiceStub]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield fleet_pb2_grpc.FleetServiceStub(channel)
    finally:
        server.stop(grace=None)


def test_register_over_a_real_socket() -> None:
    hardware = common_pb2.Hardware(
        ram_bytes=2 * 1024**3,
        num_cores=8,
        cpu_model="ARMv7 Processor rev 3 (v7l)",
        arch="armv7l",
        torch_version="2.5.1",
        runtime_baseline_bytes=180 * 1024**2,
    )
    request = fleet_pb2.RegisterRequest(
        enrollment_token="enrol-me", hardware=hardware, node_name="pole-17"
    )

    with _fleet_stub(_Fleet(b"", 1024)) as stub:
        response = stub.Register(request, timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Register(fleet_pb2.RegisterRequest(enrollment_token="wrong"), timeout=10)

    assert response.node_id == "node-pole-17"
    assert response.hardware_class == f"armv7l-{2 * 1024**3}"
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_weights_and_updates_travel_as_chunks_over_a_real_socket() -> None:
    chunk_bytes = 64 * 1024
    weights = bytes(range(256)) * 1000 + b"tail"  # not a multiple of the chunk size
    update = weights[::-1]
    header = fleet_pb2.UpdateHeader(
        node_id="node-1", job_id="j-1", round=2, num_samples=96, blob=_blob_info(update)
    )

    def upload(data: bytes) -> Iterator[fleet_pb2.UploadUpdateRequest]:
        yield fleet_pb2.UploadUpdateRequest(header=header)
        for offset in range(0, len(data), chunk_bytes):
            yield fleet_pb2.UploadUpdateRequest(
                chunk=common_pb2.Chunk(
                    offset_bytes=offset, data=data[offset : offset + chunk_bytes]
                )
            )

    with _fleet_stub(_Fleet(weights, chunk_bytes)) as stub:
        stream = list(
            stub.DownloadWeights(
                fleet_pb2.DownloadWeightsRequest(node_id="node-1", job_id="j-1", round=2),
                timeout=10,
            )
        )
        accepted = stub.UploadUpdate(upload(update), timeout=10)
        corrupted = stub.UploadUpdate(upload(update[:-1] + b"X"), timeout=10)

    first, chunks = stream[0], stream[1:]
    received = b"".join(item.chunk.data for item in chunks)
    assert first.WhichOneof("payload") == "header"
    assert all(item.WhichOneof("payload") == "chunk" for item in chunks)
    assert max(len(item.chunk.data) for item in chunks) == chunk_bytes
    assert received == weights
    assert hashlib.sha256(received).hexdigest() == first.header.blob.sha256_hex
    assert accepted.accepted and accepted.received_bytes == len(update)
    assert not corrupted.accepted
    assert corrupted.rejection.code == common_pb2.ERROR_CODE_CHECKSUM_MISMATCH
