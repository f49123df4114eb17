# Every target installs what it needs on first use, so a fresh clone needs only
# `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install test lint format demo lock lock-check clean help build push smoke image-test wheel pi-test

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

demo: $(STAMP)  ## synthetic shapes -> channel -> train the default preset on CPU (~6 min) -> eval AP
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

LOCK_COMPILE = $(UV) pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28

lock: $(STAMP)  ## re-resolve requirements*.in into the lock files, then check them with pip
	$(LOCK_COMPILE) requirements.in -o requirements.lock
	$(LOCK_COMPILE) requirements-dev.in -c requirements.lock -o requirements-dev.lock
	$(LOCK_COMPILE) requirements-image.in -c requirements.lock --override requirements-image-excludes.txt -o requirements-image.lock
	$(LOCK_COMPILE) requirements-base.in -c requirements-image.lock -o requirements-base.lock
	$(MAKE) lock-check

# pip decides whether a lock installs, not uv: uv ignores upper bounds in Requires-Python
# (astral-sh/uv#4022), pip (the installer of the image, the Pi and most users) enforces them.
# Every pin of every lock, each once, must install for CPython 3.11 on Linux x86_64 (glibc up to
# bookworm's 2.36) from a wheel, since the image has no compiler; promise and seqeval are pure
# Python and published as sdists only. (pip downloads each file to check it: about 4 GB, cached.)
LOCKS := requirements.lock requirements-dev.lock requirements-image.lock requirements-base.lock
LOCK_CHECK_PLATFORMS := $(foreach v,17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36,--platform manylinux_2_$(v)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any
LOCK_CHECK_SDISTS := promise,seqeval

lock-check: $(STAMP)  ## check that every lock installs with pip on Python 3.11 (uv does not check that)
	@work=$$(mktemp -d); \
	cat $(LOCKS) | grep -E '^[A-Za-z0-9]' | sort -u > $$work/pins.txt; \
	echo "pip install --dry-run: $$(wc -l < $$work/pins.txt) pins of $(LOCKS) (CPython 3.11, Linux x86_64)"; \
	if ! $(PY) -m pip install --dry-run --no-deps --ignore-installed \
		--target $$work/target --python-version 3.11 --implementation cp \
		--abi cp311 --abi abi3 --abi none $(LOCK_CHECK_PLATFORMS) \
		--only-binary=:all: --no-binary $(LOCK_CHECK_SDISTS) --use-pep517 \
		--requirement $$work/pins.txt > $$work/log 2>&1; then \
		grep -v "^WARNING: Location" $$work/log | tail -20; rm -rf $$work; \
		echo "error: a pin above does not install with pip on Python 3.11 (grep it in $(LOCKS)); fix requirements*.in, then make lock"; \
		exit 1; \
	fi; \
	rm -rf $$work; echo "every pin installs"

# ---- image: make build [CPU=1], make push, make smoke [GPU=1], make image-test ----
# DOCKER is docker when installed, else podman (the same commands); DOCKER=podman chooses.
IMAGE ?= tf-object-detection:latest
REPOSITORY ?= tf-object-detection
TAG ?= latest
SMOKE_DIR ?= smoke_output
SMOKE_STEPS ?= 20
DOCKER ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
# Behind a TLS-intercepting proxy pip needs its CA bundle: it goes in as the build secret pip-ca
# (a read-only mount for one RUN), never into a layer.
PIP_CA ?= $(or $(PIP_CERT),$(SSL_CERT_FILE))
comma := ,
BUILD_SECRET = $(if $(wildcard $(PIP_CA)),--secret id=pip-ca$(comma)src=$(PIP_CA))

build:  ## build the training image (Debian bookworm + TensorFlow with CUDA; CPU=1 without CUDA)
	$(DOCKER) build $(BUILD_SECRET) $(if $(filter 1,$(CPU)),--build-arg TENSORFLOW_EXTRAS=) -t $(IMAGE) .

push: $(STAMP)  ## push IMAGE to ECR (creates REPOSITORY, logs the client in via boto3), print its URI
	$(PY) -m launch push $(IMAGE) --repository $(REPOSITORY) --tag $(TAG) --docker $(DOCKER)

smoke: $(STAMP)  ## run IMAGE train on a synthetic channel mounted at /opt/ml (GPU=1: --gpus all)
	rm -rf $(SMOKE_DIR)
	$(PY) -m data_prep synth $(SMOKE_DIR)/voc --num-images 40
	$(PY) -m data_prep build $(SMOKE_DIR)/voc $(SMOKE_DIR)/channel
	$(PY) -m launch local $(SMOKE_DIR)/channel --base-dir $(SMOKE_DIR)/opt_ml --copy-channels --prepare-only --hp num_steps=$(SMOKE_STEPS)
	$(DOCKER) run --rm $(if $(filter 1,$(GPU)),--gpus all) --user $$(id -u):$$(id -g) -e HOME=/tmp -v $(abspath $(SMOKE_DIR))/opt_ml:/opt/ml $(IMAGE) train
	ls -l $(SMOKE_DIR)/opt_ml/model

image-test: $(STAMP)  ## build the Dockerfile with podman (root) on a cached stand-in base, run it as SageMaker does
	$(PY) -m pytest tests/image --timeout 3600 -p no:cacheprovider

clean:  ## remove the virtual environment, demo output and built wheels
	rm -rf $(VENV) $(DEMO_DIR) build dist
