# syntax=docker/dockerfile:1
# MLflow tracking server for the chart's optional in-release registry: MLflow with the Postgres
# driver (backend store) and boto3 (S3-compatible artifact store). The chart runs `mlflow server`.
# Build (the context needs nothing from the repository):
#   docker build -f docker/mlflow.Dockerfile -t registry.example.com/tritone/mlflow:0.1.0 docker
FROM python:3.11-slim

# The MLflow release the project is tested against (scripts/setup.sh environment).
ARG MLFLOW_VERSION=3.17.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34" \
 && groupadd --gid 1000 mlflow \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlflow \
 && install -d -o 1000 -g 1000 /var/lib/mlflow

USER 1000:1000
WORKDIR /var/lib/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host=0.0.0.0", "--port=5000", "--backend-store-uri=sqlite:////var/lib/mlflow/mlflow.db", "--artifacts-destination=/var/lib/mlflow/artifacts"]
