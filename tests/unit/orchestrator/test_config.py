from pathlib import Path

import pytest

from orchestrator.config import Address, CoordinatorConfig

TOKENS = {"enrollment_token": "enroll-secret", "admin_token": "admin-secret"}


def test_defaults_put_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    config = CoordinatorConfig(data_dir=tmp_path, **TOKENS)

    assert config.database_url == f"sqlite+pysqlite:///{tmp_path / 'registry.sqlite3'}"
    assert config.model_store_dir == tmp_path / "models"
    assert str(config.listen) == "127.0.0.1:50051"
    assert not config.tls


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:0", "127.0.0.1", 0), ("0.0.0.0:50051", "0.0.0.0", 50051), ("[::1]:9", "::1", 9)],
)
def test_addresses_parse(text: str, host: str, port: int) -> None:
    address = Address.parse(text)

    assert (address.host, address.port) == (host, port)
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "HOST:PORT"),
        ("h:70000", "port must be"),
        ("h:x", "port must be"),
        ("[zz]:1", "IPv6"),
    ],
)
def test_bad_addresses_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Address.parse(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enrollment_token": "short"}, "enrollment_token must be at least 8"),
        ({"admin_token": "enroll-secret"}, "must differ"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"tls_cert": Path("/etc/hostname")}, "give both or neither"),
        ({"client_ca": Path("/etc/hostname")}, "needs tls_cert"),
        ({"tls_cert": Path("/nope.pem"), "tls_key": Path("/nope.key")}, "no such file"),
        ({"chunk_bytes": 16 << 20}, "chunk_bytes"),
        ({"heartbeat_timeout_s": 0}, "heartbeat_timeout_s"),
        ({"upload_concurrency": 0}, "upload_concurrency must be from 1 to 112"),
        ({"upload_concurrency": 113}, "upload_concurrency must be from 1 to 112"),
        ({"handler_threads": 16}, "handler_threads must be more than the 16"),
        ({"handler_threads": 20, "upload_concurrency": 5}, "from 1 to 4"),
    ],
)
def test_bad_settings_named(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"data_dir": tmp_path, **TOKENS, **changes}

    with pytest.raises(ValueError, match=message):
        CoordinatorConfig(**arguments)  # type: ignore[arg-type]
