# syntax=docker/dockerfile:1
# A board's agent: `pip install '.[agent]'` (torch included), for linux/amd64 and linux/arm64:
#   docker buildx build --platform linux/arm64,linux/amd64 \
#     -f deploy/docker/agent.Dockerfile -t edgefleet/agent:0.1.0 .
# On aarch64, PyPI's torch wheels are the CPU build; on x86_64 they carry CUDA, so amd64 takes
# torch from PyTorch's CPU index instead (TORCH_INDEX_URL) to keep the image small.
FROM --platform=$BUILDPLATFORM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG TARGETARCH
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
RUN set -eu; \
    wheel="$(echo /wheels/edgefleet-*.whl)"; \
    if [ "${TARGETARCH}" = "amd64" ]; then index="--extra-index-url ${TORCH_INDEX_URL}"; else index=""; fi; \
    pip install --no-cache-dir ${index} "${wheel}[agent]"; \
    rm -rf /wheels; \
    useradd --system --uid 10001 --user-group --home-dir /var/lib/edgefleet-agent edgefleet; \
    install -d -o 10001 -g 10001 /var/lib/edgefleet-agent
USER 10001:10001
WORKDIR /var/lib/edgefleet-agent
# The enrollment token comes from EDGEFLEET_ENROLLMENT_TOKEN; frames and weights are mounted
# under the data directory (see docs/operations.md).
ENTRYPOINT ["edgefleet", "agent", "run", "--data-dir", "/var/lib/edgefleet-agent"]
