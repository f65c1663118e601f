# syntax=docker/dockerfile:1
# tritone's Triton server: NVIDIA's Triton container (with TensorRT and the python backend), a
# Python 3.11 environment with the project for the python-backend models, and model_repository/.
#
# Release 24.10 is Triton 2.51, the version the embedded default runs (nvidia-pytriton 0.7.0), on
# CUDA 12.6. Its system Python is 3.10 while tritone needs 3.11, so the image adds a standalone
# CPython 3.11 and swaps in the python backend stub that nvidia-pytriton 0.7.0 builds for 3.11
# against the same Triton release (stub and backend must come from one release).
#
# Build from the repository root (BuildKit reads docker/triton.Dockerfile.dockerignore), after
# the build has rendered model_repository/ for the gpu target:
#   docker build -f docker/triton.Dockerfile -t registry.example.com/tritone/triton:0.1.0 .
# TensorRT engines must be built by the TensorRT of this image (10.x in 24.10) on the GPU model
# they will run on.
ARG TRITON_RELEASE=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3

# uv fetches a relocatable CPython 3.11 build; PyPI's default torch wheel is a CUDA build. For
# nodes whose driver is older than that wheel's CUDA, point TORCH_INDEX_URL at a matching
# https://download.pytorch.org/whl/cu1XX index.
ARG UV_VERSION=0.13.9
ARG PYTHON_VERSION=3.11
ARG PYTRITON_VERSION=0.7.0
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/tritone/venv

# Python 3.11 and the project's virtual environment; its libpython goes where the stub finds it.
RUN pip3 install "uv==${UV_VERSION}" \
 && uv python install "${PYTHON_VERSION}" \
 && uv venv --python "${PYTHON_VERSION}" "${VIRTUAL_ENV}" \
 && python_home=$(dirname "$(dirname "$(readlink -f "${VIRTUAL_ENV}/bin/python")")") \
 && mkdir -p /opt/tritone/lib \
 && ln -s "${python_home}/lib/libpython${PYTHON_VERSION}.so.1.0" /opt/tritone/lib/ \
 && test -e "/opt/tritone/lib/libpython${PYTHON_VERSION}.so.1.0"

# The python backend stub for Python 3.11 from nvidia-pytriton (same Triton 2.51 release), and the
# CUDA runtime it was linked against (a renamed copy, so it cannot clash with the system one).
RUN pip3 download --no-deps --dest /tmp/pytriton "nvidia-pytriton==${PYTRITON_VERSION}" \
 && python3 -m zipfile -e /tmp/pytriton/nvidia_pytriton-*.whl /tmp/pytriton/wheel \
 && install -m 0755 "/tmp/pytriton/wheel/pytriton/tritonserver/python_backend_stubs/${PYTHON_VERSION}/triton_python_backend_stub" \
      /opt/tritonserver/backends/python/triton_python_backend_stub \
 && install -m 0644 /tmp/pytriton/wheel/nvidia_pytriton.libs/libcudart-*.so.* /opt/tritone/lib/ \
 && rm -rf /tmp/pytriton

# The stub starts the `python3` first on PATH (the venv) and loads libpython from /opt/tritone/lib.
ENV PATH=/opt/tritone/venv/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/tritone/lib:${LD_LIBRARY_PATH}

WORKDIR /opt/tritone/src
COPY scripts/constraints.txt scripts/constraints.txt
RUN uv pip install --python "${VIRTUAL_ENV}/bin/python" --index-url "${TORCH_INDEX_URL}" \
      --constraint scripts/constraints.txt torch==2.13.0
COPY pyproject.toml README.md ./
COPY tritone/ tritone/
COPY training/ training/
COPY adapters/ adapters/
COPY build/ build/
COPY gateway/ gateway/
COPY loadtest/ loadtest/
# Some dependencies ship source only (webrtcvad) and need a C compiler. It stays: removing it
# could take packages of NVIDIA's image with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && uv pip install --python "${VIRTUAL_ENV}/bin/python" --constraint scripts/constraints.txt . \
 && python3 -c "import sys, numpy, torch, tritone; assert sys.version_info[:2] == (3, 11), sys.version"

# The model repository (config.pbtxt + python models + what the build wrote into version folders).
# The chart can mount another one over /models (PVC or object store) instead.
COPY model_repository/ /models/

# State folder for downloaded adapters (the chart mounts a volume here); uid 1000 as in the chart.
RUN install -d -o 1000 -g 1000 /var/lib/tritone /var/lib/tritone/adapters
ENV TRITONE_HOME=/var/lib/tritone \
    TRITONE_ADAPTER_STORE=/var/lib/tritone/adapters

USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001 8002
# NVIDIA's entrypoint (CUDA compatibility checks) stays; it runs this command.
CMD ["tritonserver", "--model-repository=/models", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
