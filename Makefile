# `make test` and `make demo` set everything up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The whole pipeline on synthetic AudioSet, in a few minutes on 2 cores.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(PY) -m tfdata.synthetic --output_dir $(DEMO_DIR)/audioset --num_clips 20000 --seed 0
	$(PY) -m tfdata.summarize '$(DEMO_DIR)/audioset/*.tfrecord' --class_labels $(DEMO_DIR)/audioset/class_labels_indices.csv

clean:
	rm -rf $(DEMO_DIR) $(VENV)
