"""The coordinator's gRPC server: services, health checking, reflection, TLS.

``running(config)`` starts it and stops it in ``finally`` (gracefully, letting calls in flight
finish for ``grace_s``), as the grpc examples do; ``port`` is the bound port (config port 0 asks
the kernel for a free one, which is how tests start it).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from orchestrator.conductor import Conductor
from orchestrator.config import CoordinatorConfig
from orchestrator.handlers.jobs import check_admin
from orchestrator.interceptors import AdminInterceptor, ErrorInterceptor
from orchestrator.metrics import MetricsInterceptor
from orchestrator.servicers.fleet import FleetServicer
from orchestrator.servicers.jobs import JobsServicer
from orchestrator.state import FleetState
from orchestrator.storage import SqlStorage
from protos.edgefleet.v1 import fleet_pb2, fleet_pb2_grpc, jobs_pb2, jobs_pb2_grpc

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningServer:
    port: int
    server: grpc.Server
    health: health.HealthServicer
    metrics_port: int | None = None
    """The Prometheus endpoint's port, when metrics are on."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _credentials(config: CoordinatorConfig) -> grpc.ServerCredentials:
    assert config.tls_cert is not None and config.tls_key is not None, "checked by the caller"
    pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
    if config.client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=config.client_ca.read_bytes(), require_client_auth=True
    )


@contextmanager
def running(config: CoordinatorConfig, grace_s: float = 5.0) -> Iterator[RunningServer]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        storage = SqlStorage(config.database_url)
        stack.callback(storage.close)
        state = FleetState(storage, config)
        # First in the list runs outermost: the metrics see the status the error interceptor set.
        interceptors: list[grpc.ServerInterceptor] = [
            MetricsInterceptor(state.metrics),
            ErrorInterceptor(),
            AdminInterceptor(
                jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name,
                lambda token: check_admin(state, token),
            ),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.handler_threads),
            interceptors=interceptors,
            options=[("grpc.http2.bdp_probe", int(config.http2_bdp_probe))],
        )
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(FleetServicer(state), server)
        jobs_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(state), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        fleet_name = fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name
        jobs_name = jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name
        reflection.enable_server_reflection(
            (fleet_name, jobs_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = str(config.listen)
        if config.tls:
            port = server.add_secure_port(address, _credentials(config))
        else:
            port = server.add_insecure_port(address)
        # The conductor stops after the server (callbacks run last in, first out), so no handler
        # is left waiting for it.
        rng = random.Random(config.selection_seed) if config.selection_seed is not None else None
        stack.enter_context(Conductor(state, rng).running())
        server.start()
        stack.callback(lambda: server.stop(grace_s).wait())
        for service in ("", fleet_name, jobs_name):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        metrics_port = None
        if config.metrics_port is not None:
            endpoint, _ = start_http_server(
                config.metrics_port, addr=config.listen.host, registry=state.metrics.registry
            )
            stack.callback(endpoint.server_close)
            stack.callback(endpoint.shutdown)
            metrics_port = endpoint.server_port
            _LOG.info("metrics on http://%s:%d/metrics", config.listen.host, metrics_port)
        _LOG.info("coordinator listening on %s:%d", config.listen.host, port)
        yield RunningServer(
            port=port, server=server, health=health_servicer, metrics_port=metrics_port
        )
