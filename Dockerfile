# Build stage: compile the Cython twins into a wheel.
FROM python:3.11-slim AS build
# Debian's compiler from the base image's release; its version follows the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY _speedups ./_speedups
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no compiler, non-root (UID/GID 1000, numeric so Kubernetes'
# runAsNonRoot can check it), nothing written outside /tmp: mount /tmp as a tmpfs
# or emptyDir and run with a read-only root filesystem.
FROM python:3.11-slim
RUN groupadd --gid 1000 gateway \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 1000:1000
WORKDIR /tmp
ENV SERVER_HOST=0.0.0.0 SERVER_PORT=8080 METRICS_PORT=9090 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 9090
# Workers: GATEWAY_WORKERS, by default the CPUs the container's quota allows.
ENTRYPOINT ["llm-gateway", "serve"]
