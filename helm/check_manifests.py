"""Check the manifests `helm template` renders from helm/tritone, offline.

Usage: python helm/check_manifests.py RENDERED.yaml [...]

For each file (one whole release):

1. every object validates against the Kubernetes 1.30 OpenAPI schemas in strict mode (unknown
   fields are errors), using the schemas bundled with kubernetes-validate; the CRD-based
   ServiceMonitor, which has no bundled schema, is checked against the subset of its CRD that the
   chart uses, and its selector and port names are resolved against the rendered Services;
2. the release has the properties the deployment relies on: every serving container has
   readiness and liveness probes, every container has resources, Triton asks for a GPU and has a
   startup probe that allows minutes to load, the gateway's TRITONE_TRITON_URLS names the headless
   Triton Service, only the gateway reaches Triton and only the gateway is exposed.

Prints one line per failure and exits 1 if there is any; exits 0 with a summary otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBE_VERSION = "1.30.0"
DURATION = r"^([0-9]+(ms|s|m|h))+$"

Obj = dict[str, Any]

# The part of the monitoring.coreos.com/v1 ServiceMonitor CRD the chart uses; any other field is
# reported, so a misspelt field cannot pass unnoticed.
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


def load(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise SystemExit(f"{path}: a rendered document is not a Kubernetes object: {str(d)[:120]}")
    return docs


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if not selector:
        return True  # an empty selector selects everything
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selects(svc: Obj, labels: Mapping[str, str]) -> bool:
    """Whether a Service's selector (a plain label map; empty = no managed endpoints) selects these labels."""
    selector = svc["spec"].get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Checker:
    def __init__(self, path: Path, docs: list[Obj]) -> None:
        self.path = path
        self.docs = docs
        self.failures: list[str] = []

    def fail(self, obj: Obj | None, msg: str) -> None:
        where = f"{name_of(obj)}: " if obj else ""
        self.failures.append(f"{self.path.name}: {where}{msg}")

    def of_kind(self, kind: str) -> list[Obj]:
        return [d for d in self.docs if d["kind"] == kind]

    def component(self, kind: str, component: str) -> list[Obj]:
        return [
            d
            for d in self.of_kind(kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    @staticmethod
    def pod_labels(deploy: Obj) -> dict[str, str]:
        labels: dict[str, str] = deploy["spec"]["template"]["metadata"].get("labels", {})
        return labels

    # -- 1. schemas -------------------------------------------------------------------------
    def validate_schemas(self) -> None:
        for d in self.docs:
            if d["kind"] == "ServiceMonitor":
                self.validate_service_monitor(d)
                continue
            try:
                kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(root)"
                self.fail(d, f"invalid for Kubernetes {KUBE_VERSION}: {at}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                self.fail(d, f"no schema to validate against: {e.message}")

    def validate_service_monitor(self, sm: Obj) -> None:
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA)
        errors = sorted(validator.iter_errors(sm), key=lambda e: list(e.path))
        for e in errors:
            at = ".".join(str(p) for p in e.path) or "(root)"
            self.fail(sm, f"invalid ServiceMonitor: {at}: {e.message}")
        if errors:
            return
        spec = sm["spec"]
        services = [
            s for s in self.of_kind("Service") if selects(spec["selector"], s["metadata"].get("labels", {}))
        ]
        if len(services) != 1:
            names = ", ".join(name_of(s) for s in services) or "none"
            self.fail(
                sm,
                f"selector must select exactly one rendered Service (scraping twice otherwise); got {names}",
            )
            return
        port_names = {p.get("name") for p in services[0]["spec"]["ports"]}
        for ep in spec["endpoints"]:
            if ep["port"] not in port_names:
                self.fail(sm, f"endpoint port {ep['port']!r} is not a port name of {name_of(services[0])}")

    # -- 2. release properties --------------------------------------------------------------
    def check_containers(self) -> None:
        for deploy in self.of_kind("Deployment"):
            spec = deploy["spec"]
            if not selects(spec["selector"], self.pod_labels(deploy)):
                self.fail(deploy, "spec.selector does not select its own pod template")
            pod = spec["template"]["spec"]
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                self.fail(deploy, "pod securityContext.runAsNonRoot is not true")
            for kind, containers in (
                ("initContainer", pod.get("initContainers", [])),
                ("container", pod["containers"]),
            ):
                for c in containers:
                    who = f"{kind} {c['name']!r}"
                    res = c.get("resources") or {}
                    for key in ("cpu", "memory"):
                        if key not in (res.get("requests") or {}):
                            self.fail(deploy, f"{who} has no resources.requests.{key}")
                    if "memory" not in (res.get("limits") or {}):
                        self.fail(deploy, f"{who} has no resources.limits.memory")
                    if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
                        self.fail(deploy, f"{who} does not set allowPrivilegeEscalation: false")
                    if kind == "container" and c.get("ports"):
                        for probe in ("readinessProbe", "livenessProbe"):
                            if probe not in c:
                                self.fail(deploy, f"{who} serves ports but has no {probe}")
                        self.check_probe_ports(deploy, c)

    def check_probe_ports(self, deploy: Obj, c: Obj) -> None:
        names = {p.get("name") for p in c["ports"]}
        numbers = {p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = (c.get(probe) or {}).get("httpGet")
            if http and http["port"] not in names and http["port"] not in numbers:
                self.fail(
                    deploy,
                    f"container {c['name']!r} {probe} uses port {http['port']!r}, which it does not expose",
                )

    def only(self, deploys: list[Obj], what: str) -> Obj | None:
        if len(deploys) != 1:
            self.fail(None, f"expected exactly one {what} Deployment, found {len(deploys)}")
            return None
        return deploys[0]

    def check_triton(self, triton: Obj) -> None:
        c = next((c for c in triton["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"), None)
        if c is None:
            self.fail(triton, "no container named 'triton'")
            return
        gpus = (c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu")
        if not gpus or int(gpus) < 1:
            self.fail(
                triton, "the triton container does not request a GPU (resources.limits['nvidia.com/gpu'])"
            )
        want = {
            "startupProbe": "/v2/health/ready",
            "readinessProbe": "/v2/health/ready",
            "livenessProbe": "/v2/health/live",
        }
        for probe, path in want.items():
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                self.fail(triton, f"triton {probe} must GET {path}, not {got!r}")
        startup = c.get("startupProbe") or {}
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if budget < 300:
            self.fail(
                triton, f"triton startupProbe allows {budget} s to load; model loading needs at least 300 s"
            )
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for name in ("http", "grpc", "metrics"):
            if name not in ports:
                self.fail(triton, f"triton container has no port named {name!r}")
        args = c.get("args", [])
        for flag, name in (("--http-port", "http"), ("--grpc-port", "grpc"), ("--metrics-port", "metrics")):
            if name in ports and f"{flag}={ports[name]}" not in args:
                self.fail(triton, f"triton args lack {flag}={ports[name]} (the {name} containerPort)")
        if "--model-repository=/models" not in args:
            self.fail(triton, "triton args lack --model-repository=/models")

    def check_gateway(self, gateway: Obj, triton: Obj | None) -> None:
        c = next(
            (c for c in gateway["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"), None
        )
        if c is None:
            self.fail(gateway, "no container named 'gateway'")
            return
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        for key in ("TRITONE_TRITON_URLS", "TRITONE_MLFLOW_URI", "TRITONE_API_KEYS_FILE"):
            if not env.get(key):
                self.fail(gateway, f"gateway env has no {key}")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for key, name in (("TRITONE_HTTP_PORT", "http"), ("TRITONE_GRPC_PORT", "grpc")):
            if env.get(key) != str(ports.get(name)):
                self.fail(
                    gateway, f"{key}={env.get(key)!r} differs from the {name} containerPort {ports.get(name)}"
                )
        if triton is not None and env.get("TRITONE_TRITON_URLS"):
            self.check_triton_urls(gateway, env["TRITONE_TRITON_URLS"], triton)
        keys_file = env.get("TRITONE_API_KEYS_FILE") or ""
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"].get("volumes", [])}
        if not any(
            keys_file.startswith(path.rstrip("/") + "/") and "secret" in volumes.get(vol, {})
            for vol, path in mounts.items()
        ):
            self.fail(gateway, f"TRITONE_API_KEYS_FILE {keys_file!r} is not inside a mounted Secret volume")

    def check_triton_urls(self, gateway: Obj, urls: str, triton: Obj) -> None:
        triton_labels = self.pod_labels(triton)
        for url in urls.split(","):
            host, _, port = url.strip().rpartition(":")
            svc_name = host.split(".")[0]
            svc = next((s for s in self.of_kind("Service") if s["metadata"]["name"] == svc_name), None)
            if svc is None:
                self.fail(gateway, f"TRITONE_TRITON_URLS entry {url!r} names no rendered Service")
                continue
            if svc["spec"].get("clusterIP") != "None":
                self.fail(
                    gateway,
                    f"TRITONE_TRITON_URLS entry {url!r} is not a headless Service (needs per-pod addresses)",
                )
            if not service_selects(svc, triton_labels):
                self.fail(
                    gateway,
                    f"TRITONE_TRITON_URLS entry {url!r}: {name_of(svc)} does not select the Triton pods",
                )
            svc_ports = {str(p["port"]): p.get("targetPort") for p in svc["spec"]["ports"]}
            if svc_ports.get(port) != "grpc":
                self.fail(
                    gateway,
                    f"TRITONE_TRITON_URLS entry {url!r}: port {port} is not the Service's Triton gRPC port",
                )

    def policies_for(self, labels: Mapping[str, str]) -> list[Obj]:
        return [p for p in self.of_kind("NetworkPolicy") if selects(p["spec"].get("podSelector"), labels)]

    def check_network_policy(self, triton: Obj, gateway: Obj) -> None:
        t_labels, g_labels = self.pod_labels(triton), self.pod_labels(gateway)
        c = triton["spec"]["template"]["spec"]["containers"][0]
        port_by_name = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        metrics = {"metrics", port_by_name.get("metrics")}
        policies = self.policies_for(t_labels)
        if not policies:
            self.fail(triton, "no NetworkPolicy selects the Triton pods")
        for pol in policies:
            if selects(pol["spec"].get("podSelector"), g_labels):
                self.fail(pol, "the Triton policy's podSelector also selects the gateway pods")
            if "Ingress" not in pol["spec"].get("policyTypes", ["Ingress"]):
                self.fail(pol, "policyTypes lacks Ingress")
            for i, rule in enumerate(pol["spec"].get("ingress") or []):
                peers = rule.get("from") or []
                if not peers:
                    self.fail(pol, f"ingress[{i}] allows every source")
                    continue
                from_gateway_only = all(
                    set(p) == {"podSelector"}
                    and selects(p["podSelector"], g_labels)
                    and not selects(p["podSelector"], t_labels)
                    for p in peers
                )
                ports = [p.get("port") for p in rule.get("ports") or []]
                if not from_gateway_only and (not ports or any(p not in metrics for p in ports)):
                    self.fail(
                        pol,
                        f"ingress[{i}] lets a non-gateway peer reach Triton ports {ports or 'all'} (only metrics allowed)",
                    )

    def check_mlflow_policy(self, mlflow: Obj, triton: Obj, gateway: Obj) -> None:
        policies = self.policies_for(self.pod_labels(mlflow))
        if not policies:
            self.fail(mlflow, "no NetworkPolicy selects the MLflow pods")
            return
        peers = [
            p for pol in policies for rule in pol["spec"].get("ingress") or [] for p in rule.get("from") or []
        ]
        for who, labels in (("gateway", self.pod_labels(gateway)), ("Triton", self.pod_labels(triton))):
            if not any("podSelector" in p and selects(p["podSelector"], labels) for p in peers):
                self.fail(mlflow, f"the MLflow NetworkPolicy does not admit the {who} pods")

    def check_exposure(self, gateway: Obj) -> None:
        g_labels = self.pod_labels(gateway)
        gateway_services = set()
        for svc in self.of_kind("Service"):
            if service_selects(svc, g_labels):
                gateway_services.add(svc["metadata"]["name"])
            elif svc["spec"].get("type", "ClusterIP") != "ClusterIP":
                self.fail(svc, f"type {svc['spec']['type']}: only the gateway may be exposed")
        if not gateway_services:
            self.fail(gateway, "no Service selects the gateway pods")
        for ing in self.of_kind("Ingress"):
            for rule in ing["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]["name"]
                    if backend not in gateway_services:
                        self.fail(ing, f"routes to Service {backend!r}; only the gateway may be exposed")

    def check_references(self) -> None:
        deployments = {d["metadata"]["name"] for d in self.of_kind("Deployment")}
        for hpa in self.of_kind("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["kind"] != "Deployment" or ref["name"] not in deployments:
                self.fail(hpa, f"scales {ref['kind']}/{ref['name']}, which is not rendered")
            for deploy in self.of_kind("Deployment"):
                if deploy["metadata"]["name"] == ref["name"] and "replicas" in deploy["spec"]:
                    self.fail(
                        deploy,
                        "sets spec.replicas although an HPA scales it (upgrades would reset the scale)",
                    )
        for pdb in self.of_kind("PodDisruptionBudget"):
            if not any(
                selects(pdb["spec"]["selector"], self.pod_labels(d)) for d in self.of_kind("Deployment")
            ):
                self.fail(pdb, "selects no rendered pods")
        accounts = {s["metadata"]["name"] for s in self.of_kind("ServiceAccount")}
        for deploy in self.of_kind("Deployment"):
            sa = deploy["spec"]["template"]["spec"].get("serviceAccountName", "default")
            if accounts and sa not in accounts:
                self.fail(deploy, f"uses ServiceAccount {sa!r}, which is not rendered")

    def run(self) -> list[str]:
        self.validate_schemas()
        if self.failures:
            self.fail(None, "release checks skipped: they need objects that validate")
            return self.failures
        try:
            self.check_release()
        except (KeyError, TypeError, ValueError) as e:
            # an object shape the schemas allow but these checks do not expect
            self.fail(None, f"release checks stopped on an unexpected object shape: {type(e).__name__}: {e}")
        return self.failures

    def check_release(self) -> None:
        self.check_containers()
        triton = self.only(self.component("Deployment", "triton"), "Triton")
        gateway = self.only(self.component("Deployment", "gateway"), "gateway")
        if triton is not None:
            self.check_triton(triton)
        if gateway is not None:
            self.check_gateway(gateway, triton)
            self.check_exposure(gateway)
        if triton is not None and gateway is not None and self.of_kind("NetworkPolicy"):
            self.check_network_policy(triton, gateway)
            for mlflow in self.component("Deployment", "mlflow"):
                self.check_mlflow_policy(mlflow, triton, gateway)
        self.check_references()


def summary(docs: Iterable[Obj]) -> str:
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["kind"]] = counts.get(d["kind"], 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python helm/check_manifests.py RENDERED.yaml [...]", file=sys.stderr)
        return 2
    failures: list[str] = []
    for arg in argv:
        path = Path(arg)
        docs = load(path)
        found = Checker(path, docs).run()
        failures += found
        status = "FAIL" if found else "ok"
        print(f"  {status:4} {path.name}: {len(docs)} objects ({summary(docs)})")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
