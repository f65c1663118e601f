# syntax=docker/dockerfile:1
# The tritone gateway: FastAPI (HTTP) + grpcio (gRPC), CPU only.
# Build from the repository root (BuildKit reads docker/gateway.Dockerfile.dockerignore):
#   docker build -f docker/gateway.Dockerfile -t registry.example.com/tritone/gateway:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user; uid/gid 1000 match the chart's securityContext.
RUN groupadd --gid 1000 tritone \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin tritone \
 && install -d -o 1000 -g 1000 /var/lib/tritone

WORKDIR /opt/tritone/src

# torch first, from the CPU wheel index: the project's torch pin would otherwise pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY scripts/constraints.txt scripts/constraints.txt
COPY pyproject.toml README.md ./
COPY tritone/ tritone/
COPY training/ training/
COPY adapters/ adapters/
COPY build/ build/
COPY gateway/ gateway/
COPY loadtest/ loadtest/
# A C compiler only while installing: some dependencies ship source only (webrtcvad).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --constraint scripts/constraints.txt . \
 && apt-get purge -y --auto-remove gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && tritone --help >/dev/null

ENV TRITONE_HOME=/var/lib/tritone \
    TRITONE_HTTP_PORT=8080 \
    TRITONE_GRPC_PORT=50051

USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 50051
ENTRYPOINT ["tritone"]
CMD ["gateway", "serve"]
