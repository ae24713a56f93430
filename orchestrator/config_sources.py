"""Where the coordinator's configuration comes from: a file, the environment, a few flags.

Every setting has one name everywhere: the ``CoordinatorConfig`` field (``chunk_bytes``) is its
key in the YAML file and, upper-cased behind ``EDGEFLEET_``, its environment variable
(``EDGEFLEET_CHUNK_BYTES``). Later sources win: the field's default, then the file, then the
environment, then the flags ``edgefleet coordinator serve`` was given. Secrets (the tokens, a
database URL with its password) belong in the environment, which ``ps`` does not show; the Helm
chart renders the file from its values and passes the secrets as variables.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path

import yaml

from orchestrator.config import Address, CoordinatorConfig

ENV_PREFIX = "EDGEFLEET_"
DEFAULT_DATA_DIR = Path("data/coordinator")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_config(
    file: Path | None, environ: Mapping[str, str], flags: Mapping[str, object]
) -> CoordinatorConfig:
    """The configuration from ``file`` (YAML, optional), ``environ`` and ``flags`` (``None``
    values: not given); ``ValueError`` naming the source and the setting for anything wrong."""
    hints = typing.get_type_hints(CoordinatorConfig)
    names = [field.name for field in dataclasses.fields(CoordinatorConfig)]
    values: dict[str, object] = {}
    if file is not None:
        for name, value in _read_file(file, names).items():
            values[name] = _convert(value, hints[name], f"{file}: {name}")
    for name in names:
        variable = env_name(name)
        if variable in environ:
            values[name] = _convert(environ[variable], hints[name], variable)
    values.update({name: value for name, value in flags.items() if value is not None})
    values.setdefault("data_dir", DEFAULT_DATA_DIR)
    for required in ("enrollment_token", "admin_token"):
        if not values.get(required):
            raise ValueError(f"{required} is not set: give {env_name(required)} (a secret)")
    return CoordinatorConfig(**values)  # type: ignore[arg-type]


def _read_file(file: Path, names: list[str]) -> dict[str, object]:
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the config file {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{file} is not YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a config file is a mapping of settings")
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise ValueError(f"{file}: unknown settings {unknown}; known: {', '.join(names)}")
    return {str(key): value for key, value in data.items()}


def _convert(value: object, hint: object, where: str) -> object:
    """``value`` (a YAML scalar or an environment string) as the field's type."""
    options = typing.get_args(hint)
    if type(None) in options:
        if value is None or value == "":
            return None
        hint = next(option for option in options if option is not type(None))
    if hint is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif hint is Address:
        if isinstance(value, str):
            return Address.parse(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ValueError(f"{where}: must be {_ARTICLES.get(name, name)}, got {value!r}")


_ARTICLES = {
    "Path": "a path",
    "Address": "HOST:PORT",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "text",
}
