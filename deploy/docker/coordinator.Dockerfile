# syntax=docker/dockerfile:1
# The coordinator: `pip install '.[coordinator]'`, no torch (tests/integration/deploy installs
# the wheel the same way and serves from it). Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t edgefleet/coordinator:0.1.0 .
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
RUN set -eu; \
    wheel="$(echo /wheels/edgefleet-*.whl)"; \
    pip install --no-cache-dir "${wheel}[coordinator]"; \
    rm -rf /wheels; \
    useradd --system --uid 10001 --user-group --home-dir /var/lib/edgefleet edgefleet; \
    install -d -o 10001 -g 10001 /var/lib/edgefleet
USER 10001:10001
WORKDIR /var/lib/edgefleet
# Tokens come from EDGEFLEET_ENROLLMENT_TOKEN and EDGEFLEET_ADMIN_TOKEN.
EXPOSE 50051 9090
ENTRYPOINT ["edgefleet", "coordinator", "serve"]
CMD ["--listen", "0.0.0.0:50051", "--data-dir", "/var/lib/edgefleet", "--metrics-port", "9090"]
