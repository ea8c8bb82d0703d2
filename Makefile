# Quick start: `make run` (venv + install + default suite + report), `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BENCH  := $(VENV)/bin/bench
# These machines carry torch 2.14.1 / torchvision 0.29.1 on disk; installing them first avoids
# an unpinned multi-GB download. pyproject itself states ranges; override TORCH_PINS elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv run test test-all lint bench perf images mnist5k-study referee clean

# The venv takes about 6.6 GiB (torch's CUDA build with its libraries): warn before pip runs
# out of disk with a bare 'No space left on device'.
$(VENV)/.installed: pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt 7 ]; then echo "warning: $$free GiB free on this disk; the venv needs about 7 GiB, so pip may stop with 'No space left on device'" >&2; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test,fid]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BENCH) run --config configs/quick.yaml --out results/quick
	$(BENCH) report results/quick --out reports/quick.md

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m ''

# pytest-benchmark suite (tests/test_benchmarks.py); compare with the committed baseline:
#   make bench BENCH_ARGS='--benchmark-compare=0001_baseline --benchmark-compare-fail=median:25%'
bench: venv
	$(PY) -m pytest -q -m benchmark --benchmark-enable $(BENCH_ARGS)

perf: venv
	$(BENCH) perf --dataset mnist5k --repeats 10 --sample-batch 256 --md reports/perf-mnist5k.md

images: venv
	$(BENCH) run --config configs/mnist5k.yaml --out results/mnist5k
	$(BENCH) report results/mnist5k --out reports/mnist5k.md

# The mnist5k ladder (+ K = 1), peers and curves in two lanes with a shared results folder
# (scripts/mnist5k_study.sh; about 18 h on 2 CPU cores; it resumes after a stop).
mnist5k-study: venv
	BENCH=$(BENCH) scripts/mnist5k_study.sh

# The mnist5k runs a referee asks for (consistency peer, t sampling, lr x EMA sensitivity on a
# validation split, the peers and ladder in one feature space, 3-seed curves), most useful
# first (scripts/referee_mnist5k.sh, which lists its steps' times: steps 1 to 3 and part of 4
# are recorded, about 21 h on 2 CPU cores are left; it resumes after a stop).
referee: venv
	BENCH=$(BENCH) scripts/referee_mnist5k.sh

lint: venv
	$(VENV)/bin/ruff check bench tests scripts examples

clean:
	rm -rf $(VENV) results .pytest_cache
