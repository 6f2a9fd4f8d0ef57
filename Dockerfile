# Build stage: compile the Cython twins into a wheel.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY _speedups ./_speedups
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no compiler, non-root.
FROM python:3.11-slim
RUN useradd --system --uid 10001 gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER gateway
ENV SERVER_HOST=0.0.0.0 SERVER_PORT=8080 METRICS_PORT=9090 PYTHONUNBUFFERED=1
EXPOSE 8080 9090
ENTRYPOINT ["llm-gateway", "serve"]
CMD ["--workers", "1"]
