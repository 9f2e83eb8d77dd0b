#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks, for its Python (3.12, x86-64 manylinux),
# into var/wheels (git-ignored; carried to the device with carry=["var/wheels"]).
#
# The device image has torch, numpy, pillow, scipy, safetensors, opencv, rich, pyyaml,
# jinja2 and pandas (see /work/.library/device/KINDS.md) but not diffusers, pydantic or
# open_clip. Versions are the ones this checkout's .venv runs the tests with, so the GPU
# run exercises the same library code; transformers/hub/tokenizers/peft/accelerate come
# along too (and what huggingface_hub 2.x imports: httpx2, click), since the image's older
# ones may not match diffusers here. The gate stage (bench_host_gate.py) runs the generate
# task's own code, so it needs the catalog's SQLAlchemy + alembic (SQLite) and the
# task module's imports too.
#
#   tests/benchmarks/gpu/fetch_wheels.sh            # then: du -sh var/wheels  (< 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-var/wheels}
NAMES=(diffusers transformers tokenizers huggingface_hub hf-xet peft accelerate
       pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection
       typing_extensions importlib_metadata zipp open_clip_torch ftfy wcwidth
       invisible-watermark PyWavelets httpx2 httpcore2 truststore click regex
       SQLAlchemy alembic Mako prometheus_client kombu amqp vine redis)
PLATFORMS=()
for n in 17 24 27 28 31 34 35; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

rm -rf "$DEST" && mkdir -p "$DEST"
for name in "${NAMES[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  if [[ -z "$version" ]]; then
    echo "fetch_wheels: $name is not installed in $PY's environment; skipped" >&2
    continue
  fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" --platform any \
    -d "$DEST" "$name==$version"
done
ls -1 "$DEST"
du -sh "$DEST"
