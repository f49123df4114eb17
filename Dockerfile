# The SageMaker training image: `docker run IMAGE train` runs exactly `python -m container train`.
#
#   GPU (default): docker build -t tf-object-detection .
#   CPU:           docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.20.0 -t tf-od:cpu .
#
# The base brings TensorFlow 2.20.0 (and, for -gpu, its CUDA/cuDNN stack); requirements.lock,
# the same lock the tests run against, pins everything else at the tested versions.
ARG BASE_IMAGE=tensorflow/tensorflow:2.20.0-gpu
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras

# --no-deps: the lock is complete and exact, so pip installs precisely its pins; the base's
# TensorFlow 2.20.0 satisfies the tensorflow pin and keeps its CUDA libraries. The lock is
# resolved for Python 3.11, so a base with another Python fails here, with the reason.
COPY requirements.lock /tmp/requirements.lock
RUN python3 -c "import sys; v = sys.version_info[:2]; assert v == (3, 11), \
f'requirements.lock is resolved for Python 3.11; base image has {v}; pick a 3.11 base'" \
    && python3 -m pip install --no-cache-dir --no-deps --requirement /tmp/requirements.lock \
    && rm -f /tmp/requirements.lock \
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
# evaluates its TFLite exports with the same code the Raspberry Pi runs).
WORKDIR /opt/program
COPY pyproject.toml README.md /tmp/src/
COPY data_prep/ /tmp/src/data_prep/
COPY container/ /tmp/src/container/
COPY edge/ /tmp/src/edge/
COPY launch/ /tmp/src/launch/
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src /root/.cache

# SageMaker hosting runs the image with `serve` (container/serving): it listens on the port
# SageMaker passes in SAGEMAKER_BIND_TO_PORT (8080 by default), as this label declares.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

# Exec form: python is PID 1 and receives SageMaker's SIGTERM itself (spot stop -> checkpoint;
# for `serve`, drain the requests in flight).
ENTRYPOINT ["python3", "-m", "sagemaker_tfod.container"]
CMD ["train"]
