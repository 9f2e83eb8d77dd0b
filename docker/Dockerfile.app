# syntax=docker/dockerfile:1
# shotline CPU image: the gate/publish/ingest workers (-Q cpu,ingest), beat, the migration job
# and the `shotline` CLI. CPU-only torch keeps it ~1.5 GB instead of ~8 GB with CUDA wheels.
#
#   docker build -f docker/Dockerfile.app -t shotline-app:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml constraints.txt ./
# Torch first, from the CPU wheel index: the default PyPI wheels drag in the CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch torchvision
# The dependency list is read from pyproject.toml, so this layer is rebuilt only when the
# dependencies change, not on every source edit.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt
COPY alembic.ini README.md ./
COPY migrations ./migrations
COPY pipeline ./pipeline
COPY catalog ./catalog
COPY tasks ./tasks
COPY samples ./samples
# Editable on purpose: `shotline db upgrade` finds alembic.ini and migrations/ next to the
# packages. EXTRAS names optional-dependency groups to add, e.g. --build-arg EXTRAS=provenance.
ARG EXTRAS=""
RUN pip install --no-deps -e . \
    && if [ -n "${EXTRAS}" ]; then pip install -c constraints.txt -e ".[${EXTRAS}]"; fi

FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgl1/libglib2.0-0: OpenCV (pulled by invisible-watermark) links them even when headless.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/shotline shotline \
    && install -d -o shotline -g shotline /var/lib/shotline /var/lib/shotline/var \
        /var/lib/shotline/hf /var/lib/shotline/model-cache /var/lib/shotline/beat \
        /run/prometheus
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=shotline:shotline /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/var/lib/shotline/hf \
    SHOTLINE_VAR_DIR=/var/lib/shotline/var \
    SHOTLINE_MODEL_CACHE_DIR=/var/lib/shotline/model-cache
USER 10001:10001
# Compose overrides the command per service (worker, beat, migrate); bare, it is the CLI.
CMD ["shotline", "--help"]
