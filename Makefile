# make demo / make test create .venv and install requirements.txt when needed (or when it changed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: venv test test-slow test-all demo bench results clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

PYTEST := $(PY) -m pytest tests -q -p no:cacheprovider -n 2 --dist loadgroup

# The fast tier (on 2 cores about 5 minutes with a warm XLA compilation cache, 9-12 cold: bench/README.md): everything but the tests marked slow (restarted, faulted and
# multi-process runs; end-to-end runs that repeat a fast-tier path). VQGAN_TEST_CPU_LOG=FILE logs each test's CPU seconds.
test: $(STAMP)
	$(PYTEST) -m "not slow"

# The slow tier; CI (.ci/run) runs both.
test-slow: $(STAMP)
	$(PYTEST) -m slow

test-all: $(STAMP)
	$(PYTEST)

demo: $(STAMP)
	$(PY) train.py --config configs/demo.py --workdir $(DEMO_DIR)
	$(PY) train.py --config configs/demo.py --workdir $(DEMO_DIR) --stage prior
	$(PY) sample.py --workdir $(DEMO_DIR) --num 64 --out $(DEMO_DIR)/samples --seed 0
	$(PY) sample.py --workdir $(DEMO_DIR) --codebook --out $(DEMO_DIR)/codebook.png
	$(PY) sample.py --workdir $(DEMO_DIR) --training_pictures --out $(DEMO_DIR)/pictures
	@echo "demo pictures:"
	@echo "  $(DEMO_DIR)/vqgan/images/                 originals over reconstructions during training"
	@echo "  $(DEMO_DIR)/pictures/vqgan/evolution.png   those reconstructions over time, in one montage"
	@echo "  $(DEMO_DIR)/pictures/vqgan/loss_curves.png training and held-out losses, codebook usage"
	@echo "  $(DEMO_DIR)/pictures/prior/                 the prior's sample grids over time and its loss"
	@echo "  $(DEMO_DIR)/samples/grid.png              generated images (prior + decoder)"
	@echo "  $(DEMO_DIR)/codebook.png                  the learned codebook with its usage histogram"

bench: $(STAMP)
	$(PY) bench/train_step.py --config configs/flowers64.py --config.loss.perceptual_weight=0
	$(PY) bench/prior.py --config configs/flowers64.py

# The README's Results table: trains four generators on the photos, evaluates, rewrites the table (huge pages:
# docs/cpu-backend.md; about 4 hours on a 2-core CPU).
results: $(STAMP)
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(PY) bench/results.py --data_dir ../shared/data/flowers64 --workdir runs/results --update_readme

clean:
	rm -rf $(VENV) runs .pytest_cache
