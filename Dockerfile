# The SageMaker training image: `docker run IMAGE train` runs `python -m sagemaker_tfod.container train`.
#
#   GPU (default): docker build -t tf-object-detection .                   (or: make build)
#   CPU:           docker build --build-arg TENSORFLOW_EXTRAS= -t tf-od:cpu .  (or: make build CPU=1)
#
# Base: Debian bookworm and its Python 3.11, the Python every lock is resolved and checked for;
# TensorFlow and, for GPUs, the CUDA libraries of its `and-cuda` extra come from
# requirements-base.lock, so a GPU host needs only its NVIDIA driver. Any other base works if its
# `python3` is 3.11 (the build stops otherwise); a base that already has the locked TensorFlow
# (the stand-in `make image-test` builds) skips those layers.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---- stage `tensorflow`: Python 3.11 + TensorFlow ------------------------------------------
FROM ${BASE_IMAGE} AS tensorflow
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    LANG=C.UTF-8

# Debian stable changes a package only for security fixes, which remove the previous version
# from the archive: pinning apt versions would break builds, not make them reproducible.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c "import sys; v = sys.version_info[:2]; assert v == (3, 11), \
f'the lock files are resolved for Python 3.11; this base has {v}; pick a 3.11 base'"

# A package index behind a TLS-intercepting proxy: pass its CA bundle as the build secret
# `pip-ca` (make build does when SSL_CERT_FILE or PIP_CERT is set). A secret is mounted read-only
# for one RUN and never stored in a layer.
ARG TENSORFLOW_EXTRAS=and-cuda
COPY requirements-base.lock /tmp/requirements-base.lock
RUN --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m pip install --no-cache-dir --constraint /tmp/requirements-base.lock \
        "tensorflow${TENSORFLOW_EXTRAS:+[$TENSORFLOW_EXTRAS]}==$(sed -n 's/^tensorflow==//p' /tmp/requirements-base.lock)" \
    && rm -f /tmp/requirements-base.lock \
    && rm -rf /root/.cache

# ---- the training image --------------------------------------------------------------------
FROM tensorflow
ENV TF_CPP_MIN_LOG_LEVEL=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras

# --no-deps: the lock is complete and exact, so pip installs precisely its pins (those the
# `tensorflow` stage installed are already satisfied). The installed metadata then stops
# requiring what requirements-image-excludes.txt leaves out (Model Garden's NLP, download and
# Kaggle dependencies, tensorflow-datasets' Arrow formats), so `pip check` checks what is there.
COPY requirements-image.lock requirements-image-excludes.txt launch/image_requirements.py /tmp/
RUN --mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m pip install --no-cache-dir --no-deps --requirement /tmp/requirements-image.lock \
    && python3 /tmp/image_requirements.py /tmp/requirements-image-excludes.txt \
    && rm -f /tmp/requirements-image.lock /tmp/requirements-image-excludes.txt /tmp/image_requirements.py \
    && rm -rf /root/.cache

# SageMaker mounts /opt/ml/{input,model,checkpoints,output} owned by root and runs the image's
# user there, so training keeps root on SageMaker. Locally the image runs as any user
# (make smoke uses --user with the caller's uid); `trainer` is a named one for convenience.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin trainer \
    && mkdir -p /opt/ml /opt/program \
    && printf '#!/bin/sh\nexec python3 -m sagemaker_tfod.container train "$@"\n' > /usr/local/bin/train \
    && printf '#!/bin/sh\nexec python3 -m sagemaker_tfod.container serve "$@"\n' > /usr/local/bin/serve \
    && chmod 0755 /usr/local/bin/train /usr/local/bin/serve

# The project installs as one distribution under `sagemaker_tfod` (edge: the container
# evaluates its TFLite exports with the same code the Raspberry Pi runs). No build isolation:
# the lock's setuptools builds it, nothing is downloaded.
WORKDIR /opt/program
COPY pyproject.toml README.md /tmp/src/
COPY data_prep/ /tmp/src/data_prep/
COPY container/ /tmp/src/container/
COPY edge/ /tmp/src/edge/
COPY launch/ /tmp/src/launch/
RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation /tmp/src \
    && rm -rf /tmp/src /root/.cache

# SageMaker hosting runs the image with `serve` (container/serving): it listens on the port
# SageMaker passes in SAGEMAKER_BIND_TO_PORT (8080 by default), as this label declares.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

# Exec form: python is PID 1 and receives SageMaker's SIGTERM itself (spot stop -> checkpoint;
# for `serve`, drain the requests in flight).
ENTRYPOINT ["python3", "-m", "sagemaker_tfod.container"]
CMD ["train"]
