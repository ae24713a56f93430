# syntax=docker/dockerfile:1
# A board's agent: `pip install '.[agent]'` (torch included), for linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/arm64,linux/amd64 \
#     -f deploy/docker/agent.Dockerfile -t edgefleet/agent:0.1.0 .
# On aarch64 the agent extra pins torch 2.9.1 / torchvision 0.24.1, PyPI's CPU build and the
# newest that runs on Raspberry Pi 3/4 cores (from 2.10 on: SIGILL on ARMv8.0, docs/agent.md).
# On x86_64 PyPI's wheels carry CUDA, so amd64 takes torch from PyTorch's CPU index instead
# (TORCH_INDEX_URL) to keep the image small. 32-bit ARM has no torch: there is no arm/v7 image.
# The agent checks at start, before torch loads, that the board's CPU runs this torch.
FROM --platform=$BUILDPLATFORM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# The plan-aware arena (node_agent/arena.c), compiled for the target: the agent preloads it.
FROM python:3.11-slim AS arena
WORKDIR /src
COPY node_agent/arena.c .
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && cc -O2 -Wall -Wextra -shared -fPIC -o libedgefleet_arena.so arena.c -lpthread -ldl

FROM python:3.11-slim
ARG TARGETARCH
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
COPY --from=arena /src/libedgefleet_arena.so /usr/local/lib/libedgefleet_arena.so
RUN set -eu; \
    wheel="$(echo /wheels/edgefleet-*.whl)"; \
    if [ "${TARGETARCH}" = "amd64" ]; then index="--extra-index-url ${TORCH_INDEX_URL}"; else index=""; fi; \
    pip install --no-cache-dir ${index} "${wheel}[agent]"; \
    rm -rf /wheels; \
    edgefleet agent check --timeout-s 1800; \
    useradd --system --uid 10001 --user-group --home-dir /var/lib/edgefleet-agent edgefleet; \
    install -d -o 10001 -g 10001 /var/lib/edgefleet-agent
# Training's large blocks go to the arena (the agent logs "allocator edgefleet-arena").
ENV LD_PRELOAD=/usr/local/lib/libedgefleet_arena.so
USER 10001:10001
WORKDIR /var/lib/edgefleet-agent
# The enrollment token comes from EDGEFLEET_ENROLLMENT_TOKEN; frames and weights are mounted
# under the data directory (see docs/operations.md).
ENTRYPOINT ["edgefleet", "agent", "run", "--data-dir", "/var/lib/edgefleet-agent"]
