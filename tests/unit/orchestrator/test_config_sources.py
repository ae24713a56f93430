"""The coordinator's configuration from a file, the environment and flags, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Address
from orchestrator.config_sources import env_name, load_config

_SECRETS = {"EDGEFLEET_ENROLLMENT_TOKEN": "enroll-0123", "EDGEFLEET_ADMIN_TOKEN": "admin-0123"}


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_later_sources_win_field_by_field(tmp_path: Path) -> None:
    settings = _file(
        tmp_path, f"data_dir: {tmp_path}\ntick_s: 2\nchunk_bytes: 4096\nfsync: false\n"
    )
    environment = {**_SECRETS, "EDGEFLEET_TICK_S": "0.25", "EDGEFLEET_LISTEN": "0.0.0.0:7000"}

    config = load_config(settings, environment, {"listen": Address("127.0.0.1", 0)})

    assert config.chunk_bytes == 4096  # the file
    assert config.fsync is False  # the file
    assert config.tick_s == 0.25  # the environment over the file
    assert config.listen == Address("127.0.0.1", 0)  # the flag over the environment
    assert config.upload_concurrency == 4  # the field's default
    assert config.enrollment_token == "enroll-0123"


def test_every_field_has_its_variable() -> None:
    assert env_name("db_url") == "EDGEFLEET_DB_URL"
    assert env_name("http2_bdp_probe") == "EDGEFLEET_HTTP2_BDP_PROBE"


@pytest.mark.parametrize(
    ("text", "environment", "message"),
    [
        ("chunk_bytes: lots\n", {}, "config.yaml: chunk_bytes: must be an integer, got 'lots'"),
        ("fsync: maybe\n", {}, "fsync: must be true or false"),
        ("chunk_size: 4096\n", {}, "unknown settings \\['chunk_size'\\]"),
        ("- a list\n", {}, "a mapping of settings"),
        ("", {"EDGEFLEET_TICK_S": "soon"}, "EDGEFLEET_TICK_S: must be a number, got 'soon'"),
        ("", {"EDGEFLEET_LISTEN": "nowhere"}, "HOST:PORT|nowhere"),
    ],
)
def test_a_bad_setting_names_its_source(
    tmp_path: Path, text: str, environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(_file(tmp_path, text), {**_SECRETS, **environment}, {})


def test_the_tokens_are_required_and_said_where_to_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="admin_token is not set: give EDGEFLEET_ADMIN_TOKEN"):
        load_config(None, {"EDGEFLEET_ENROLLMENT_TOKEN": "enroll-0123"}, {})


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml", _SECRETS, {})
