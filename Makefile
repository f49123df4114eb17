# Every target installs what it needs on first use, so a fresh clone needs only
# `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install test lint format demo lock clean help build push smoke wheel pi-test

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements-dev.lock requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip sync --python $(PY) requirements-dev.lock
	# The project itself, editable: `sagemaker_tfod.*` maps onto the source folders.
	$(UV) pip install --python $(PY) --no-deps --editable .
	touch $(STAMP)

install: $(STAMP)  ## create .venv from the lock files

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest

lint: $(STAMP)  ## ruff and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: $(STAMP)  ## synthetic shapes -> channel -> train the default preset on CPU (~9 min) -> eval AP
	rm -rf $(DEMO_DIR)
	$(PY) -m data_prep synth $(DEMO_DIR)/voc
	$(PY) -m data_prep build $(DEMO_DIR)/voc $(DEMO_DIR)/channel
	$(PY) -m data_prep stats $(DEMO_DIR)/channel
	$(PY) -m container.demo --channel $(DEMO_DIR)/channel --base-dir $(DEMO_DIR)/opt_ml \
		--detect-images $(DEMO_DIR)/voc/images --detections-dir $(DEMO_DIR)/detections

wheel: $(STAMP)  ## build dist/sagemaker_tf_object_detection-*.whl (on a Pi: pip install 'WHEEL[pi]')
	rm -rf build dist
	$(PY) -m pip wheel --no-deps --quiet -w dist .
	@ls dist/*.whl

# Needs root (binfmt, chroot). The arm64 root is cached in ~/.cache/sagemaker-tfod/arm64-root
# (TFOD_ARM64_ROOT_CACHE); TFOD_PI_CPU=cortex-a76 emulates a Pi 5 instead of a Pi 4.
pi-test: wheel  ## the wheel's [pi] extra on the Pi's platform (bookworm arm64 under qemu) vs x86
	$(PY) -m tests.arm64_root
	TFOD_PI_WHEEL=$$(ls dist/*.whl) $(PY) -m pytest --arm64 -s tests/test_pi_arm64.py

lock:  ## re-resolve requirements*.in into the lock files
	$(UV) pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock
	$(UV) pip compile requirements-dev.in -c requirements.lock --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements-dev.lock

# ---- image (needs Docker): make build [CPU=1], make push, make smoke [GPU=1] ----
IMAGE ?= tf-object-detection:latest
REPOSITORY ?= tf-object-detection
TAG ?= latest
SMOKE_DIR ?= smoke_output
SMOKE_STEPS ?= 20
CPU_BASE_IMAGE := tensorflow/tensorflow:2.20.0

build:  ## docker build the training image (GPU base; CPU=1 for the CPU base)
	docker build $(if $(filter 1,$(CPU)),--build-arg BASE_IMAGE=$(CPU_BASE_IMAGE)) -t $(IMAGE) .

push: $(STAMP)  ## push IMAGE to ECR (creates REPOSITORY, logs Docker in via boto3), print its URI
	$(PY) -m launch push $(IMAGE) --repository $(REPOSITORY) --tag $(TAG)

smoke: $(STAMP)  ## docker run IMAGE train on a synthetic channel mounted at /opt/ml (GPU=1: --gpus all)
	rm -rf $(SMOKE_DIR)
	$(PY) -m data_prep synth $(SMOKE_DIR)/voc --num-images 40
	$(PY) -m data_prep build $(SMOKE_DIR)/voc $(SMOKE_DIR)/channel
	$(PY) -m launch local $(SMOKE_DIR)/channel --base-dir $(SMOKE_DIR)/opt_ml --copy-channels --prepare-only --hp num_steps=$(SMOKE_STEPS)
	docker run --rm $(if $(filter 1,$(GPU)),--gpus all) --user $$(id -u):$$(id -g) -e HOME=/tmp -v $(abspath $(SMOKE_DIR))/opt_ml:/opt/ml $(IMAGE) train
	ls -l $(SMOKE_DIR)/opt_ml/model

clean:  ## remove the virtual environment, demo output and built wheels
	rm -rf $(VENV) $(DEMO_DIR) build dist
