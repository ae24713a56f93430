"""The student the aggregation benchmark trains, built and profiled for real (torch, bench process).

The coordinator plans every board from a memory model fitted on a real profile, so the benchmark
answers its profile task with what a real board would send: the agent's own profiling
(``node_agent.profiling``: the engine's per-stage measurements of the model, converted to the
protocol's ``ChainProfile``, plus the allocator overhead measured while training) at exactly the
sizes the coordinator asks a job's student for (``orchestrator.planning``). It is measured once,
here, before anything else runs, so that the simulated boards need no torch.
"""

from __future__ import annotations

from orchestrator.planning import PROFILE_BATCH_SIZES, profile_image_sizes
from protos.edgefleet.v1 import fleet_pb2


def profile_task(model_name: str, image_size: int, num_classes: int) -> fleet_pb2.ProfileTask:
    """The profile task the coordinator sends one board of a class for a job's student."""
    return fleet_pb2.ProfileTask(
        model_name=model_name,
        batch_sizes=PROFILE_BATCH_SIZES,
        image_sizes=profile_image_sizes(image_size),
        num_classes=num_classes,
        calibrate=True,
    )


def student_weights_and_profile(
    model_name: str, image_size: int, num_classes: int
) -> tuple[bytes, fleet_pb2.UploadProfileRequest]:
    """The freshly initialised model as safetensors, and its profile as a board would send it."""
    import torch
    from safetensors.torch import save

    from checkpointing.execution.models import build_model
    from node_agent.profiling import run_profile

    # Profiled first: the allocator overhead is read from this process's memory, best untouched.
    measured = run_profile(profile_task(model_name, image_size, num_classes))
    torch.manual_seed(0)
    model = build_model(model_name, num_classes)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    weights: bytes = save(state)
    request = fleet_pb2.UploadProfileRequest(
        model_name=model_name,
        parameter_bytes=measured.parameter_bytes,
        buffer_bytes=measured.buffer_bytes,
        profiles=measured.profiles,
        allocator_overhead_fraction=measured.allocator_overhead_fraction,
        allocator_overhead_bytes=measured.allocator_overhead_bytes,
        num_classes=measured.num_classes,
    )
    return weights, request
