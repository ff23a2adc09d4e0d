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
	$(PY) train.py --config configs/demo.py --workdir $(DEMO_DIR) --stage prior
	$(PY) sample.py --workdir $(DEMO_DIR) --num 64 --out $(DEMO_DIR)/samples --seed 0
	$(PY) sample.py --workdir $(DEMO_DIR) --codebook --out $(DEMO_DIR)/codebook.png
	@echo "demo pictures:"
	@echo "  $(DEMO_DIR)/vqgan/images/    originals over reconstructions during training"
	@echo "  $(DEMO_DIR)/samples/grid.png generated images (prior + decoder)"
	@echo "  $(DEMO_DIR)/codebook.png     the learned codebook with its usage histogram"

bench: $(STAMP)
	$(PY) bench/train_step.py --config configs/flowers64.py --config.loss.perceptual_weight=0
	$(PY) bench/prior.py --config configs/flowers64.py

clean:
	rm -rf $(VENV) runs .pytest_cache
