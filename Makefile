# Two commands on a fresh machine: `make demo` (set up, then a quick search) and
# `make test` (set up, then unit tests and every notebook under nbval).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A matching torch + torchvision pair; override for another platform, e.g.
#   make TORCH_PAIR="torch==2.9.1 torchvision==0.24.1" test
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: setup demo test unit notebooks lab bench clean graphviz fashion-mnist chromium run-notebooks html student tables gpu-check gpu-data

setup: $(STAMP) graphviz fashion-mnist

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PAIR)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

# The graphviz Python package only writes DOT text; drawings need the system `dot`.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || \
	      echo "graphviz: could not install the 'dot' binary; drawings will be skipped (install graphviz with your OS package manager)"; \
	  else \
	    echo "graphviz: no 'dot' binary; install it (apt-get install graphviz, brew install graphviz, conda install graphviz) to see cell drawings"; \
	  fi; }

# Fashion-MNIST, the quick preset's data, offline: Debian's package holds its four files.
# Elsewhere torchvision downloads it into data/ on first use (see data/README.md).
fashion-mnist:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte.gz ] || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (timeout 300 apt-get update -qq -o Acquire::Retries=0 >/dev/null 2>&1 && \
	     timeout 300 apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
	      echo "fashion-mnist: could not install dataset-fashion-mnist; it downloads into data/ on first use when online; offline choices: digits, synthetic"; \
	  else \
	    echo "fashion-mnist: not installed; 'apt-get install dataset-fashion-mnist' (or it downloads into data/ on first use when online; offline choices: digits, synthetic)"; \
	  fi; }

demo: setup
	$(VENV)/bin/nas-tutorial search pc-darts --preset quick --retrain --out runs/demo --overwrite

unit: setup
	$(PY) -m pytest -q tests

# The notebooks always run on the quick preset here, whatever the machine (a GPU would
# otherwise pick `full`), and without static figure copies (they only matter when saved).
NB_ENV := NAS_TUTORIAL_PRESET=quick NAS_TUTORIAL_STATIC=0

notebooks: setup
	$(NB_ENV) $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

test: setup chromium
	$(PY) -m pytest -q tests
	$(NB_ENV) $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

# JupyterLab refuses to start as root unless told; a container or a classroom VM often is root.
lab: setup
	$(VENV)/bin/jupyter lab notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Chromium renders the static copies of the plotly figures (kaleido) and checks the handouts;
# with its driver it runs tests/test_browser.py (figures redrawn in a real JupyterLab).
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (timeout 300 apt-get update -qq >/dev/null 2>&1 && \
	     timeout 600 apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1) || \
	      echo "chromium: could not install it; figures stay interactive-only in saved notebooks, the browser test is skipped"; \
	  else \
	    echo "chromium: not installed; figures stay interactive-only in saved notebooks, the browser test is skipped (apt-get install chromium chromium-driver)"; \
	  fi; }

# Learners' copies: the exercise solutions replaced by a stub (nbgrader's ClearSolutions).
student: setup
	$(VENV)/bin/nas-tutorial student notebooks student

# Every notebook as self-contained HTML in handouts/, checked in headless Chromium.
html: setup chromium
	$(VENV)/bin/nas-tutorial handouts notebooks --out handouts

bench: setup
	$(PY) benchmarks/run_all.py

# On a lent GPU machine (no internet, its own torch, no .venv): the cuda tests, the search
# step at the papers' sizes, the second-order gradient against float64 and every CLI verb,
# from source, recorded under data/runs/ (benchmarks/gpu_check.py). DRY=1: the same script
# on the CPU with tiny sizes (about a minute; a unit test runs it).
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	PYTHONPATH=. $(GPU_PY) benchmarks/gpu_check.py $(if $(DRY),--dry) $(if $(OUT),--out $(OUT))

# Fashion-MNIST's four files into data/FashionMNIST/raw/, so that a run on a machine without
# internet can carry them along (the device tool's `carry: ["data/FashionMNIST"]`).
gpu-data:
	@src=$$($(PY) -c "import nas_tutorial as nt; print(nt.data.find_fashion_mnist() or '')"); \
	  [ -n "$$src" ] || { echo "gpu-data: Fashion-MNIST is not installed here (make fashion-mnist)"; exit 1; }; \
	  mkdir -p data/FashionMNIST/raw && cp -n $$src/*-ubyte.gz data/FashionMNIST/raw/ 2>/dev/null; \
	  ls data/FashionMNIST/raw
clean:
	rm -rf $(VENV) runs .pytest_cache handouts student

# Re-execute every notebook on the quick preset (how they are committed), dropping the
# saved widget state (anywidget stores plotly.js in it: megabytes per notebook).
run-notebooks: setup chromium
	cd notebooks && for nb in *.ipynb; do NAS_TUTORIAL_PRESET=quick NAS_TUTORIAL_STATIC=1 ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace $$nb || exit 1; done
	for nb in notebooks/*.ipynb; do $(PY) -c "import sys, nbformat; nb = nbformat.read(sys.argv[1], 4); nb.metadata.pop('widgets', None); nbformat.write(nb, sys.argv[1])" $$nb; done
