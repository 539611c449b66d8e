# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build .venv with torch==2.13.0 first, so pip never pulls a CUDA build of torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export ORTHO_LIGHTNING_DATA ?= $(abspath ../shared/data/mnist)

.PHONY: install demo test test-gpu lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/ruff check ortho_lightning tests benchmarks scripts
	$(BIN)/python -m pytest

# The cores and a training with every callback on a CUDA device (tests/test_cuda.py); needs a
# CUDA build of torch==2.13.0 in .venv (without a CUDA device it stops with a message).
test-gpu: $(STAMP)
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else f'make test-gpu: torch {torch.__version__} sees no CUDA device')"
	$(BIN)/python -m pytest -m cuda -rs

# The peers without their dependencies: resolving .[bench] pulls torchvision, whose PyPI wheel
# replaces the CPU torch with a CUDA build (benchmarks/README.md); the routes timed need none of it.
bench: $(STAMP)
	$(BIN)/pip install --quiet --no-deps curvlinops-for-pytorch==3.0.1 nngeometry==0.4 \
		backpack-for-pytorch==1.7.1 unfoldNd einconv linear_operator tqdm
	for b in fisher ntk constraints monitors; do $(BIN)/python benchmarks/bench_$$b.py --threads 1 || exit 1; done

clean:
	rm -rf $(VENV) runs wandb lightning_logs
