# Set-up and everyday commands (README.md, "Set up"). Each target makes .venv if it is missing
# and re-uses it otherwise; an install step re-runs only when pyproject.toml changes.
#   make run                 execute the whole series headless at PROFILE=ci into runs/<timestamp>/
#   make run PROFILE=default the real sizes
#   make test                unit tests, every notebook under papermill at PROFILE="ci", the browser
#                            tests, then the verl integration tests in .venv-verl; prints each
#                            phase's wall time (CI's budget: 30 min in all)
#   make test-default        every notebook at PROFILE=default through the runner (NB=04 for one);
#                            the Checks that hold only at default run there. Not part of CI.
#   make test-integrations   only the TorchRL (in .venv) and verl + Ray (in .venv-verl) integration tests
#   make lab                 JupyterLab on notebooks/, its kernel with rlnb's kernel environment
#   make ... TORCH=torch     choose another torch (default torch==2.13.0: a CPU wheel on our machines)

PYTHON ?= python3
TORCH ?= torch==2.13.0
PROFILE ?= ci
VENV := .venv
BIN := $(VENV)/bin
# verl pins tensordict <= 0.10 and TorchRL needs a newer one: verl gets an environment of its own
VERL_VENV := .venv-verl
VERL_BIN := $(VERL_VENV)/bin

.PHONY: run test test-default test-integrations lab lint clean
.DELETE_ON_ERROR:

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and on its own: with no torch installed, a bare `torch` requirement pulls a
# multi-GB CUDA build. Skipped when the venv already imports torch, unless TORCH= is given.
ifeq ($(origin TORCH),command line)
.PHONY: $(VENV)/.torch
endif
$(VENV)/.torch: | $(BIN)/python
	@if [ "$(origin TORCH)" = "command line" ] || ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "installing $(TORCH)"; $(BIN)/python -m pip install "$(TORCH)"; fi
	touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@ $(VENV)/.core

$(VENV)/.lab: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e ".[lab]"
	touch $@ $(VENV)/.core

$(VERL_VENV)/.verl: pyproject.toml requirements/verl-constraints.txt
	$(PYTHON) -m venv $(VERL_VENV)
	@$(VERL_BIN)/python -c "import torch" 2>/dev/null || $(VERL_BIN)/python -m pip install "$(TORCH)"
	$(VERL_BIN)/python -m pip install -e ".[verl]" "pytest>=7.4" -c requirements/verl-constraints.txt
	touch $@

run: $(VENV)/.core
	$(BIN)/rlnb run --profile $(PROFILE) $(if $(OUT),--out $(OUT))

# `$(call phase,NAME,COMMAND)`: run one phase of `make test`, print and log its wall time, keep its exit code
PHASES := runs/test-phases.txt
define phase
	@start=$$(date +%s); $(2); rc=$$?; \
	line="$(1): $$(( $$(date +%s) - start )) s$$([ $$rc = 0 ] || echo " (failed, exit $$rc)")"; \
	mkdir -p runs; echo "$$line" >> $(PHASES); echo "== phase $$line"; exit $$rc
endef

test:
	@mkdir -p runs; rm -f $(PHASES)
	$(call phase,installs,$(MAKE) --no-print-directory $(VENV)/.dev $(VERL_VENV)/.verl)
	$(call phase,unit tests,$(BIN)/python -m pytest -m "not notebook and not browser")
	$(call phase,notebooks,$(BIN)/python -m pytest -m notebook)
	$(call phase,browser tests,$(BIN)/python -m pytest -m browser)
	$(call phase,verl tests,$(VERL_BIN)/python -m pytest tests/integrations/test_verl.py tests/integrations/test_verl_estimators.py tests/integrations/test_verl_losses.py)
	@echo "make test passed; wall time per phase (CI budget: 30 min in all):"; cat $(PHASES)

test-default: $(VENV)/.core
	$(BIN)/rlnb run $(NB) --profile default

test-integrations: $(VENV)/.dev $(VERL_VENV)/.verl
	$(BIN)/python -m pytest tests/integrations
	$(VERL_BIN)/python -m pytest tests/integrations/test_verl.py tests/integrations/test_verl_estimators.py tests/integrations/test_verl_losses.py

lab: $(VENV)/.lab
	$(BIN)/rlnb kernel
	$(BIN)/jupyter lab notebooks/

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(VERL_VENV) runs .pytest_cache .ruff_cache
