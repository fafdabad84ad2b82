# syntax=docker/dockerfile:1
# mlgate: build a virtualenv with the package (and its bundled models), then copy it into
# a slim runtime image without compilers. Configuration comes only from MLGATE_*
# variables (see README "Configuration"); nothing is baked in but the listen address.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Compilers only here, for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/mlgate
ENV PATH=/opt/mlgate/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
# A regular (not editable) install: the wheel carries the dashboard and the bundled models
# (src/mlgate/bundled_models), so the runtime stage needs nothing from the source tree.
RUN pip install . && mlgate --version

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mlgate \
    && useradd --system --uid 10001 --gid mlgate --home-dir /app --shell /usr/sbin/nologin mlgate \
    && mkdir -p /app/var \
    && chown -R mlgate:mlgate /app
COPY --from=build /opt/mlgate /opt/mlgate
ENV PATH=/opt/mlgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLGATE_SERVER__HOST=0.0.0.0 \
    MLGATE_SERVER__PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Liveness only (the process answers); readiness (/health/ready) is the orchestrator's
# business. The slim image has no curl: the standard library does the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MLGATE_SERVER__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["mlgate"]
CMD ["serve"]
