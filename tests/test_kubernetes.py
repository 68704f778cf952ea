"""The Kubernetes manifests in deploy/kubernetes/: valid against the Kubernetes schemas
(kubernetes-validate, offline, strict), and consistent with the server and with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.config import Config
from server.metrics import InstanceState, Metrics
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
# The oldest and the newest minor versions the manifests are meant for.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def find(kind: str, name: str) -> dict[str, Any]:
    for docs in manifests().values():
        for doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise KeyError(f"{kind}/{name}")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates(version: str) -> None:
    found = manifests()
    assert len(found) >= 8
    for name, docs in found.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_kustomization_lists_the_namespace_resources() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert all((K8S / r).exists() for r in resources)
    ours = {n for n, docs in manifests().items()
            if all(d["metadata"].get("namespace", "holistream") == "holistream" for d in docs)}
    assert resources == ours


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment_probes_drain_and_sizing() -> None:
    deployment = find("Deployment", "holistream")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    assert all(name.startswith("HOLISTREAM_") for name in env)
    fields = {f"HOLISTREAM_{n.upper()}" for n in Config.__dataclass_fields__}
    assert set(env) <= fields, set(env) - fields  # every variable is a real setting
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The grace period covers the preStop pause, the server's drain and the workers' stop.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(env["HOLISTREAM_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 2 * drain
    # Guaranteed QoS: the CPU limit the server reads from its cgroup is what it was given.
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    limit_mib = int(re.fullmatch(r"(\d+)Gi", resources["limits"]["memory"])[1]) * 1024
    assert float(env["HOLISTREAM_MEMORY_BUDGET_MB"]) <= 0.85 * limit_mib
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_viewers_behind_the_ingress_are_told_apart() -> None:
    """Per-address limits key on each viewer, not on the ingress controller's pod: the
    manifest's trusted proxies, read as the server reads them, take the client from
    X-Forwarded-For, and a client's own entries further left are not believed."""
    import argparse

    from server.config import add_arguments, from_args
    from server.http.security import client_address

    (container,) = find("Deployment", "holistream")["spec"]["template"]["spec"]["containers"]
    raw = _env(container)["HOLISTREAM_TRUSTED_PROXIES"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    trusted = from_args(parser.parse_args(["--trusted-proxies", raw])).trusted_proxies
    controller = "10.244.3.17"  # a pod address in a typical CNI range
    assert client_address(controller, "203.0.113.9", trusted) == "203.0.113.9"
    assert client_address(controller, "198.51.100.1, 203.0.113.9", trusted) == "203.0.113.9"
    assert client_address("203.0.113.50", "198.51.100.1", trusted) == "203.0.113.50"


def test_ingress_hashes_named_streams() -> None:
    ingress = find("Ingress", "holistream")
    notes = ingress["metadata"]["annotations"]
    key = notes["nginx.ingress.kubernetes.io/upstream-hash-by"]
    snippet = find("ConfigMap", "ingress-nginx-controller")["data"]["http-snippet"]
    assert key.startswith("$") and f"map $arg_stream {key} {{" in snippet
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 20  # > the ping period
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert "/ws" in paths and "/metrics" not in paths and "/streams" not in paths


def test_hpa_metric_is_served_by_the_adapter_and_the_server() -> None:
    hpa = find("HorizontalPodAutoscaler", "holistream")
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # one pod lost must leave another
    adapter = yaml.safe_load(find("ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    assert any(rule["name"]["as"] == name for rule in adapter["rules"])
    metrics = Metrics(lambda: [], lambda: 0)
    metrics.watch(lambda: InstanceState(True, 2, 2000.0, 500.0, 1 << 30, 1 << 28))
    text = metrics.render().decode()
    assert re.search(rf"^{name} 0\.25$", text, re.M), text
    pdb = find("PodDisruptionBudget", "holistream")
    assert pdb["spec"]["selector"] == find("Deployment", "holistream")["spec"]["selector"]


def test_probe_paths_exist_on_the_server() -> None:
    app = (ROOT / "server" / "http" / "app.py").read_text()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert f'"{path}"' in app
    assert Path(K8S / "deployment.yaml").read_text().count("/readyz") == 1


def test_every_variable_the_deploy_files_set_is_a_setting() -> None:
    """The image, the stack, the checks and the manifests configure the server only through
    HOLISTREAM_* variables: each must name a real setting (a renamed flag breaks them silently)."""
    settings = {f"HOLISTREAM_{n.upper()}" for n in Config.__dataclass_fields__}
    other = {"HOLISTREAM_NATIVE_LOGS", "HOLISTREAM_WHEEL_DIR"}  # read outside Config
    used: dict[str, str] = {}
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file():
            for name in re.findall(r"HOLISTREAM_[A-Z_]+", path.read_text(errors="replace")):
                used[name] = str(path.relative_to(ROOT))
    unknown = {n: where for n, where in used.items() if n not in settings | other}
    assert not unknown, unknown
    assert {"HOLISTREAM_HOST", "HOLISTREAM_PORT", "HOLISTREAM_CACHE_DIR"} <= set(used)
