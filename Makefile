# `make test` and `make demo` set everything up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
AUDIOSET ?= ../shared/data/audioset
AUDIOSET_EVAL ?= $(AUDIOSET)/eval_a
QUICKSTART_STEPS ?= 50

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test test-fast demo demo-real clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Two pytest workers (pytest-xdist), each taking whole modules (a module's shared fixtures are built once),
# in the order tests/conftest.py gives them: the longest modules first, not xdist's most-tests-first
# (docs/benchmarks.md: about 1.6 times as fast as one process on 2 cores).
XDIST := -n 2 --dist loadscope --no-loadscope-reorder

# Every test (CI: .ci/run).
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) tests

# The edit-test loop: all but the tests marked slow (Beam jobs, subprocesses, training runs), under 2 minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests

# The whole pipeline on synthetic AudioSet, in a few minutes on 2 cores.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(PY) -m tfdata.synthetic --output_dir $(DEMO_DIR)/audioset --num_clips 20000 --seed 0
	$(PY) -m tfdata.summarize '$(DEMO_DIR)/audioset/*.tfrecord' --class_labels $(DEMO_DIR)/audioset/class_labels_indices.csv
	$(PY) -m beam_pipelines.build_shards --input '$(DEMO_DIR)/audioset/*.tfrecord' --output_dir $(DEMO_DIR)/shards \
		--holdout_fraction 0.1
	$(PY) train.py --train_data $(DEMO_DIR)/shards --model_dir $(DEMO_DIR)/model --model feature_attention \
		--hidden_units 256 --steps 300 --steps_per_epoch 100 --eval_data $(DEMO_DIR)/shards/holdout --seed 0 \
		--sampling balanced
	$(PY) evaluate.py --saved_model $(DEMO_DIR)/model/saved_model --data $(DEMO_DIR)/shards/holdout \
		--output_dir $(DEMO_DIR)/results --train_manifest $(DEMO_DIR)/shards/manifest.json
	$(PY) predict.py --saved_model $(DEMO_DIR)/model/saved_model --input '$(DEMO_DIR)/audioset/A*.tfrecord' --top_k 3 \
		--max_clips 5

# The README's quick start on real AudioSet (AUDIOSET/bal_train), as written but with a short training:
# QUICKSTART_STEPS=1200 trains as the README does (about 21 minutes on 2 cores). Writes quickstart/.
demo-real: $(STAMP)
	@test -d $(AUDIOSET)/bal_train || { echo "no $(AUDIOSET)/bal_train: see README.md, \"The real data\"; or make demo-real AUDIOSET=DIR"; exit 2; }
	rm -rf quickstart
	$(PY) -m tfdata.summarize "$(AUDIOSET)/bal_train/*.tfrecord" --class_labels $(AUDIOSET)/class_labels_indices.csv
	$(PY) -m beam_pipelines.build_shards --input "$(AUDIOSET)/bal_train/*.tfrecord" --output_dir quickstart/shards
	$(PY) -m beam_pipelines.build_shards --input "$(AUDIOSET_EVAL)/*.tfrecord" --output_dir quickstart/eval --layout plain
	$(PY) train.py --train_data quickstart/shards --model_dir quickstart/model --eval_data quickstart/eval \
		--eval_every $(QUICKSTART_STEPS) --steps $(QUICKSTART_STEPS)
	$(PY) evaluate.py --saved_model quickstart/model --data quickstart/eval --output_dir quickstart/results \
		--train_manifest quickstart/shards/manifest.json
	$(PY) predict.py --saved_model quickstart/model --input quickstart/eval --max_clips 5 --top_k 3 \
		--output quickstart/predictions.csv

clean:
	rm -rf $(DEMO_DIR) quickstart $(VENV)
