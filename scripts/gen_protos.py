"""Generate the committed Python stubs of ``protos/edgefleet/v1/*.proto``, or check them for drift.

    python scripts/gen_protos.py            # regenerate in place
    python scripts/gen_protos.py --check    # exit 1, naming the files, if they differ

Runs ``python -m grpc_tools.protoc`` with the message (``--python_out``), service
(``--grpc_python_out``) and type-stub (mypy-protobuf's ``--mypy_out``, ``--mypy_grpc_out``)
generators. ``-I.`` from the repository root names every file ``protos/edgefleet/v1/...``, so the
generated imports read ``from protos.edgefleet.v1 import common_pb2`` and resolve as a package.

Both modes generate into a temporary directory first: writing is then a copy of exactly what the
check compares against, and stale outputs of a deleted ``.proto`` are removed (or reported).
The output depends only on the ``.proto`` files and the versions of grpcio-tools and
mypy-protobuf, so a check that fails right after a version upgrade means: regenerate and commit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("protos/edgefleet/v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class GenerationError(RuntimeError):
    """protoc or one of its plugins failed, or is missing."""


def proto_files(root: Path) -> list[Path]:
    """The ``.proto`` files to compile, relative to ``root``, in a fixed order."""
    return sorted(path.relative_to(root) for path in (root / PROTO_DIR).glob("*.proto"))


def generate(root: Path, out_dir: Path) -> None:
    """Compile every ``.proto`` under ``root`` into ``out_dir`` (which mirrors ``root``)."""
    protos = proto_files(root)
    if not protos:
        raise GenerationError(f"no .proto files in {root / PROTO_DIR}")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I.",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(path) for path in protos),
    ]
    completed = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if completed.returncode != 0:
        raise GenerationError(f"protoc failed (exit {completed.returncode}):\n{completed.stderr}")


def generated_files(tree: Path) -> dict[Path, bytes]:
    """The generated files under ``tree / PROTO_DIR``, by path relative to ``tree``."""
    directory = tree / PROTO_DIR
    if not directory.is_dir():
        return {}
    return {
        path.relative_to(tree): path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def drifting_files(root: Path) -> list[Path]:
    """Generated files under ``root`` that differ from a fresh generation, are missing or stale."""
    with tempfile.TemporaryDirectory(prefix="gen_protos_") as scratch:
        generate(root, Path(scratch))
        fresh = generated_files(Path(scratch))
    committed = generated_files(root)
    return sorted(
        path for path in fresh.keys() | committed.keys() if fresh.get(path) != committed.get(path)
    )


def write(root: Path) -> list[Path]:
    """Regenerate in place; returns the files written or removed."""
    with tempfile.TemporaryDirectory(prefix="gen_protos_") as scratch:
        generate(root, Path(scratch))
        fresh = generated_files(Path(scratch))
    changed = []
    for path in generated_files(root).keys() - fresh.keys():
        (root / path).unlink()
        changed.append(path)
    for path, content in fresh.items():
        target = root / path
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
            changed.append(path)
    return sorted(changed)


def _plugin(name: str) -> str:
    # The plugins are console scripts of mypy-protobuf, installed next to this interpreter; the
    # PATH is the fallback for an interpreter run without activating its environment.
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found: install mypy-protobuf (the 'dev' extra)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the Python stubs of protos/edgefleet/v1, or check them for drift."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the committed stubs with a fresh generation; exit 1 if they differ",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help="repository root holding protos/ (default: this script's repository)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.check:
            drifting = drifting_files(root)
            if drifting:
                names = "\n".join(f"  {path}" for path in drifting)
                print(
                    f"generated stubs differ from the .proto files:\n{names}\n"
                    "run: python scripts/gen_protos.py",
                    file=sys.stderr,
                )
                return 1
            print("generated stubs are up to date")
            return 0
        for path in write(root):
            print(f"wrote {path}")
        return 0
    except GenerationError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
