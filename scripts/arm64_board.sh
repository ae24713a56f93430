#!/usr/bin/env bash
# An arm64 board you can run here: a Debian bookworm arm64 userland and the agent's Python
# packages (PyPI's aarch64 wheels), run with QEMU user-mode emulation (docs/agent.md,
# "Running a board here"; measurements: docs/benchmarks.md).
#
#   scripts/arm64_board.sh [DIR]             build the board (a no-op once it is complete)
#   scripts/arm64_board.sh --resolve [DIR]   also resolve the project's `agent` extra with pip
#                                            run inside the emulator, as a real board would
#
# DIR defaults to ${EDGEFLEET_ARM64_DIR:-$HOME/.cache/edgefleet/arm64}. What it holds:
#   rootfs/                            the arm64 userland (python3.11 and the C libraries)
#   rootfs/opt/edgefleet/site-packages the agent's packages (torch 2.9.1 CPU build, ...)
#   wheels/                            the downloaded wheels; wheels.sha256 their digests
#   rootfs.packages                    the Debian packages' exact versions; rootfs.stamp their list
#   board.stamp                        the pinned versions; written last, when all is in place
#
# The edgefleet source is not installed: `edgefleet bench board` runs it from the repository
# (qemu-user's -L falls back to host paths for what the userland lacks).
#
# Needs qemu-user and mmdebstrap (apt-get installs them when missing and this is root) and a
# host python with pip. EDGEFLEET_DEBIAN_MIRROR picks the Debian mirror (a snapshot.debian.org
# URL makes the userland byte-identical between builds).
set -euo pipefail

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "arm64_board.sh: error: $*" >&2
    exit 1
}

say() {
    echo "arm64_board.sh: $*" >&2
}

RESOLVE=0
DIR=""
for arg in "$@"; do
    case "$arg" in
    --resolve) RESOLVE=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $arg (try --help)" ;;
    *)
        [ -z "$DIR" ] || die "one directory only, got $DIR and $arg"
        DIR=$arg
        ;;
    esac
done
DIR=${DIR:-${EDGEFLEET_ARM64_DIR:-$HOME/.cache/edgefleet/arm64}}
MIRROR=${EDGEFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)

SUITE=bookworm
DEBIAN_PACKAGES=python3.11,python3-minimal,libpython3.11-stdlib
DEBIAN_PACKAGES+=,libstdc++6,libgomp1,zlib1g,ca-certificates
# torch 2.9.1 / torchvision 0.24.1 are the newest PyPI pair that runs on Raspberry Pi 3/4 cores
# (ARMv8.0): 2.10 dies with SIGILL at import, >= 2.11 is a CUDA build (docs/agent.md).
# The rest are what `import node_agent.agent` and the agent's CLI load, with their own
# dependencies, pinned: `pip download --platform` evaluates markers for the host, so the
# dependencies are listed by hand and fetched with --no-deps.
WHEELS=(
    torch==2.9.1 torchvision==0.24.1
    filelock==4.3.2 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1
    jinja2==3.1.6 markupsafe==3.0.4 fsspec==2026.9.0
    numpy==2.4.6 pillow==13.0.0
    grpcio==1.85.3 protobuf==7.36.2 safetensors==0.8.0
    typer==0.29.2 rich==15.0.0 shellingham==1.5.4 annotated-doc==0.0.7 markdown-it-py==4.3.0
    mdurl==0.1.2 pygments==2.21.0 pydantic==2.14.4 pydantic-core==2.50.5
    annotated-types==0.8.0 typing-inspection==0.4.5
)
# The pip the --resolve step runs inside the emulator.
GUEST_PIP=pip==26.3
GUEST_PYTHON_VERSION=3.11
# Bookworm's glibc is 2.36: every manylinux_2_N tag up to it runs on the userland.
PLATFORMS=()
for n in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${n}_aarch64"); done
PLATFORMS+=(--platform manylinux2014_aarch64)

ROOTFS=$DIR/rootfs
SITE=$ROOTFS/opt/edgefleet/site-packages
STAMP=$DIR/board.stamp
ROOTFS_STAMP=$DIR/rootfs.stamp
ROOTFS_TEXT="debian $SUITE arm64: ${DEBIAN_PACKAGES//,/ }"
STAMP_TEXT="edgefleet arm64 board
$ROOTFS_TEXT
python $GUEST_PYTHON_VERSION wheels: ${WHEELS[*]}
guest pip: $GUEST_PIP"

# A guest command, run as the board runs it (QEMU_CPU: cortex-a53 is the Pi 3, a72 the Pi 4).
# No Python path of the host's reaches the guest (an x86 package would be found first).
guest() {
    env -u PYTHONHOME PYTHONPATH="${GUEST_PYTHONPATH:-}" PYTHONNOUSERSITE=1 \
        QEMU_CPU="${QEMU_CPU:-cortex-a53}" nice -n 19 \
        qemu-aarch64 -L "$ROOTFS" "$ROOTFS/usr/bin/python$GUEST_PYTHON_VERSION" -s "$@"
}

ensure_host_tools() {
    local missing=()
    command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
            die "the host needs ${missing[*]}: install them (Debian:" \
                "apt-get install -y ${missing[*]}) and run again; only root with apt-get can here"
        fi
        say "installing ${missing[*]} with apt-get"
        apt-get update -qq || die "apt-get update failed (is a Debian mirror reachable?)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
    # qemu 7.2 (bookworm) passes the host's smaps through, which is how the guest's own memory
    # is read; qemu 10 reports Rss 0 there.
    say "$(qemu-aarch64 --version | head -n 1)"
    "$HOST_PYTHON" -m pip --version >/dev/null 2>&1 ||
        die "no pip for $HOST_PYTHON (set PYTHON to a python with pip," \
            "or apt-get install python3-pip)"
}

build_rootfs() {
    say "building the $SUITE arm64 userland in $ROOTFS"
    rm -rf "$ROOTFS" "$ROOTFS.partial"
    # The extract variant keeps no dpkg database: the hook lists the packages' exact versions
    # from the downloaded .debs before they are removed.
    local list="for deb in \"\$1\"/var/cache/apt/archives/*.deb; do dpkg-deb --show"
    list+=" --showformat='\${Package} \${Version} \${Architecture}\n' \"\$deb\"; done"
    mmdebstrap --quiet --arch=arm64 --variant=extract --include="$DEBIAN_PACKAGES" \
        --extract-hook="$list >'$DIR/rootfs.packages'" \
        "$SUITE" "$ROOTFS.partial" "$MIRROR" || die "mmdebstrap failed (mirror: $MIRROR)"
    # The guest's python adds these to sys.path when they exist, and qemu-user's -L falls back
    # to the host's paths for what the userland lacks: empty ones keep the host's (x86) Python
    # packages out of the guest.
    mkdir -p "$ROOTFS.partial/usr/local/lib/python$GUEST_PYTHON_VERSION/dist-packages" \
        "$ROOTFS.partial/usr/lib/python3/dist-packages"
    mv "$ROOTFS.partial" "$ROOTFS"
}

download_wheels() {
    say "downloading ${#WHEELS[@]} aarch64 wheels"
    "$HOST_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: "${PLATFORMS[@]}" --python-version "$GUEST_PYTHON_VERSION" \
        --implementation cp --abi "cp${GUEST_PYTHON_VERSION/./}" --abi abi3 --abi none \
        -d "$DIR/wheels" "${WHEELS[@]}" "$GUEST_PIP" || die "pip download failed"
    (cd "$DIR/wheels" && sha256sum -- *.whl >"$DIR/wheels.sha256")
}

install_wheels() {
    say "installing them into $SITE"
    rm -rf "$SITE"
    "$HOST_PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-index --no-deps \
        --no-compile --find-links "$DIR/wheels" --only-binary=:all: "${PLATFORMS[@]}" \
        --python-version "$GUEST_PYTHON_VERSION" --implementation cp \
        --abi "cp${GUEST_PYTHON_VERSION/./}" --abi abi3 --abi none \
        --target "$SITE" "${WHEELS[@]}" || die "pip install --target failed"
}

# The bytecode is compiled once, so that no run pays for it (torch's 6,000 modules take
# minutes under emulation). Bytecode depends on the Python minor version only: a host Python
# 3.11 writes what the guest's would, in seconds; any other host leaves it to the guest.
compile_bytecode() {
    local same="import sys; sys.exit(sys.version_info[:2] != (${GUEST_PYTHON_VERSION/./, }))"
    if "$HOST_PYTHON" -c "$same"; then
        say "compiling the packages' bytecode with the host's Python $GUEST_PYTHON_VERSION"
        "$HOST_PYTHON" -m compileall -q -j 0 "$SITE" >/dev/null || die "compiling failed"
    else
        say "compiling the packages' bytecode in the guest (minutes under emulation)"
        guest -m compileall -q -j 0 "$SITE" >/dev/null || die "compiling in the guest failed"
    fi
}

check_guest() {
    local machine
    local code='import platform, numpy; print(platform.machine())'
    machine=$(GUEST_PYTHONPATH=$SITE guest -c "$code") ||
        die "the guest python does not run (see above)"
    [ "$machine" = aarch64 ] || die "the guest reports machine $machine, not aarch64"
}

resolve_agent_extra() {
    local work report pip_wheel=$DIR/wheels/pip-${GUEST_PIP#pip==}-py3-none-any.whl
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expanded now: $work is local
    trap "rm -rf '$work'" EXIT
    # A wheel of the project (its real metadata): a guest process cannot start another
    # emulated one (no binfmt_misc here), so pip in the guest cannot build the source tree.
    # Built from a copy of the checkout's files (tracked and new, not ignored): setuptools builds
    # in the source tree and would leave build/ there, whose stale modules end up in later wheels.
    say "building the project's wheel from $REPO"
    mkdir "$work/src"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard --deduplicate |
        tar -C "$REPO" --null --files-from=- --ignore-failed-read -cf - |
        tar -C "$work/src" -xf - || die "copying the checkout's files failed (a git checkout?)"
    "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work" \
        "$work/src" >/dev/null || die "building the project's wheel failed"
    local project_wheel
    project_wheel=$(ls "$work"/edgefleet-*.whl)
    say "resolving edgefleet[agent] with pip inside the emulator" \
        "(QEMU_CPU=${QEMU_CPU:-cortex-a53}; about 5 minutes)"
    report=$work/report.json
    # No pip configuration from the host (its indexes, constraints, PIP_* variables): a board
    # has none.
    (
        for name in $(compgen -e | grep '^PIP_'); do unset "$name"; done
        export PIP_CONFIG_FILE=/dev/null
        guest "$pip_wheel/pip" install --quiet --disable-pip-version-check --no-cache-dir \
            --dry-run --ignore-installed --report "$report" "${project_wheel}[agent]"
    ) || die "pip in the guest failed to resolve edgefleet[agent]"
    "$HOST_PYTHON" - "$report" <<'EOF'
import json
import re
import sys

installs = json.load(open(sys.argv[1]))["install"]
versions = {
    re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
    for item in installs
}
cuda = sorted(name for name in versions if name.startswith(("nvidia", "triton", "cuda")))
print(f"resolved on aarch64: {len(versions)} packages")
torch, vision = versions.get("torch", "absent"), versions.get("torchvision", "absent")
print(f"torch {torch}, torchvision {vision}")
print("nvidia/triton/cuda packages: " + (", ".join(cuda) if cuda else "none"))
print("all: " + " ".join(f"{name}=={version}" for name, version in sorted(versions.items())))
sys.exit(1 if cuda or versions.get("torch") != "2.9.1" else 0)
EOF
}

mkdir -p "$DIR"
ensure_host_tools
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
    say "board complete: $DIR"
else
    rm -f "$STAMP"
    # The userland is rebuilt only when its package list changed.
    if [ ! -f "$ROOTFS_STAMP" ] || [ "$(cat "$ROOTFS_STAMP")" != "$ROOTFS_TEXT" ]; then
        rm -f "$ROOTFS_STAMP"
        build_rootfs
        printf '%s\n' "$ROOTFS_TEXT" >"$ROOTFS_STAMP"
    fi
    download_wheels
    install_wheels
    compile_bytecode
    check_guest
    printf '%s\n' "$STAMP_TEXT" >"$STAMP"
    say "board complete: $DIR ($(du -sh "$DIR" | cut -f1))"
fi
if [ "$RESOLVE" -eq 1 ]; then
    resolve_agent_extra
fi
