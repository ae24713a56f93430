"""The coordinator's configuration: one typed, validated dataclass.

Each field is a setting of the same name in the config file, ``EDGEFLEET_<NAME>`` in the
environment, and for a few of them a flag of ``edgefleet coordinator serve``
(``orchestrator.config_sources``); the Helm chart renders the file from its values. Nothing else
configures the coordinator.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from protos.transfer import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES

RESERVED_THREADS = 16
"""Handler threads uploads may never take: heartbeats, pulls and the jobs API keep these."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT`` (``[v6]:PORT`` for IPv6); port 0 asks the kernel for a free one."""
        host, separator, port_text = text.rpartition(":")
        if not separator or not host:
            raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


DEFAULT_LISTEN = Address("127.0.0.1", 50051)


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: Path
    """Model store, and the SQLite registry unless ``db_url`` names another database."""
    enrollment_token: str
    """What a board must present to register."""
    admin_token: str
    """What an operator must present to the jobs API."""
    listen: Address = DEFAULT_LISTEN
    db_url: str | None = None
    metrics_port: int | None = None
    """Prometheus metrics on this port (0: any free one); None: no metrics endpoint."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    """Require client certificates signed by this CA (mutual TLS)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    heartbeat_timeout_s: float = 60.0
    """A node silent for this long counts as lost."""
    idle_pull_interval_s: float = 5.0
    """How long a node with nothing to do waits before pulling again."""
    profile_timeout_s: float = 600.0
    """A profile task not answered in this long is given to another node of the class."""
    ram_fraction: float = 0.85
    """A board that states no memory budget may use this fraction of its RAM."""
    default_overhead_fraction: float = 0.5
    """Allocator overhead per live tensor byte assumed when a board measured none."""
    tick_s: float = 0.5
    """How often the conductor looks at deadlines and starts rounds (it also wakes on events)."""
    fsync: bool = True
    """Flush stored weights and updates to disk before acknowledging them (off only in tests)."""
    handler_threads: int = 128
    """The gRPC server's handler threads; every call in progress holds one, an upload waiting
    for its turn too. Uploads may hold all but ``RESERVED_THREADS``; one more is refused with
    ``UNAVAILABLE`` (``ERROR_CODE_BUSY``), which agents retry after a backoff."""
    upload_concurrency: int = 4
    """How many uploads are received and checked at once; the others wait (their streams hold
    64 KiB each, and their boards wait for HTTP/2 flow control). On 2 cores, 100 MobileNetV2
    uploads took 8.3-8.4 s at 4 against 9.2-9.3 s with 32 at once, and less coordinator CPU:
    fewer streams fighting over the interpreter lock. About twice the cores."""
    selection_seed: int | None = None
    """Seeds the random choice of boards for each round, so that a rehearsal or a demo selects
    the same boards again; None: the system's randomness."""
    http2_bdp_probe: bool = False
    """gRPC's bandwidth-delay-product probing, which grows each HTTP/2 stream's receive window
    (on in gRPC by default). Off here: each stream's window stays at 64 KiB, so a burst of a
    hundred uploads waiting for a handler thread buffers 64 KiB each in the coordinator instead
    of megabytes (the difference between ~1 GB and ~1.2 GB peak for 100 MobileNetV2 updates).
    The price: one upload moves at most 64 KiB per round trip (about 3 MB/s at 20 ms, 0.6 MB/s
    at 100 ms); turn it on for boards on long links. (gRPC's ``lookahead_bytes`` cannot raise the
    window instead: with probing off it was not honoured, grpc/grpc#39585.)"""

    def __post_init__(self) -> None:
        for name in ("enrollment_token", "admin_token"):
            token = getattr(self, name)
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"{name} must be at least 8 characters")
        if self.enrollment_token == self.admin_token:
            raise ValueError("enrollment_token and admin_token must differ")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be from 0 to 65535, got {self.metrics_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("client_ca (mutual TLS) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        if not 1024 <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(
                f"chunk_bytes must be from 1024 to {MAX_CHUNK_BYTES}, got {self.chunk_bytes}"
            )
        for name in ("idle_pull_interval_s", "profile_timeout_s", "tick_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.ram_fraction <= 1:
            raise ValueError(f"ram_fraction must be in (0, 1], got {self.ram_fraction}")
        if not 0 <= self.default_overhead_fraction < 1:
            raise ValueError(
                f"default_overhead_fraction must be in [0, 1), got {self.default_overhead_fraction}"
            )
        if self.handler_threads <= RESERVED_THREADS:
            raise ValueError(
                f"handler_threads must be more than the {RESERVED_THREADS} kept for short calls, "
                f"got {self.handler_threads}"
            )
        if not 1 <= self.upload_concurrency <= self.upload_threads:
            raise ValueError(
                f"upload_concurrency must be from 1 to {self.upload_threads} "
                f"(handler_threads - {RESERVED_THREADS}), got {self.upload_concurrency}"
            )
        if not self.heartbeat_timeout_s > 0:
            raise ValueError(
                f"heartbeat_timeout_s must be positive, got {self.heartbeat_timeout_s}"
            )

    @property
    def database_url(self) -> str:
        if self.db_url is not None:
            return self.db_url
        return f"sqlite+pysqlite:///{self.data_dir / 'registry.sqlite3'}"

    @property
    def upload_threads(self) -> int:
        """How many uploads may be in progress, received or waiting for their turn."""
        return self.handler_threads - RESERVED_THREADS

    @property
    def model_store_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
