# Two commands for a fresh machine: `make demo` and `make test`. Each builds .venv once (pinned) and reuses it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The same index and pin as the Dockerfile's ARG TORCH_INDEX_URL and torch line (tests/test_docker_install.py).
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION := 2.13.0

.PHONY: demo test check quality fmt real-test clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	# torch first, exactly pinned, CPU build: from the pip configuration's own sources when they carry the CPU
	# wheel (a local wheel folder), else from the PyTorch CPU index, as the Dockerfile installs it (the default
	# Linux wheel on PyPI pulls in about 20 CUDA packages).
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)+cpu 2>/dev/null \
		|| $(BIN)/pip install --quiet --index-url "$(TORCH_INDEX_URL)" torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,real]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/run.py

test: $(STAMP) quality
	$(BIN)/pytest -q

quality: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

real-test: $(STAMP)
	$(BIN)/pytest -q -m real_model

clean:
	rm -rf $(VENV) .cache/demo
