# make demo / make test create .venv and install requirements.txt when needed (or when it changed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv test demo bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

demo: $(STAMP)
	$(PY) train.py --config configs/demo.py --workdir $(DEMO_DIR)
	@echo "demo pictures: $(DEMO_DIR)/vqgan/images/ (originals over reconstructions)"

bench: $(STAMP)
	$(PY) bench/train_step.py --config configs/flowers64.py

clean:
	rm -rf $(VENV) runs .pytest_cache
