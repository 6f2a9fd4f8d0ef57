"""deployment/k8s: rendered by ``kubectl kustomize``, validated against the Kubernetes
1.29 and latest schemas shipped by kubernetes-validate (offline), and checked on the
rendered objects, not the source files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.api.middleware import ROUTES
from gateway.config import load_config
from tests.deployment.conftest import K8S, OVERLAYS, find, gateway_env_names, render

TARGETS = {"root": str(K8S), **{o: str(K8S / "overlays" / o) for o in OVERLAYS}}
SIZES = {  # overlay: (requests cpu, memory, limits cpu, memory, replicas, HPA min, max, workers)
    "small": ("500m", "1Gi", "1000m", "2Gi", 2, 2, 4, "1"),
    "production": ("1000m", "2Gi", "2000m", "4Gi", 3, 3, 12, "2"),
    "enterprise": ("2000m", "4Gi", "4000m", "8Gi", 6, 6, 30, "4"),
}
SCHEMA_VERSIONS = ("1.29.0", "1.37.0")
BUILTIN_GROUPS = ("v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1")


def container(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    spec = find(objs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


@pytest.mark.parametrize("target", list(TARGETS))
def test_renders_and_validates_against_the_schemas(target: str) -> None:
    import kubernetes_validate

    objs = render(TARGETS[target])
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    for obj in objs:
        assert obj["apiVersion"] in BUILTIN_GROUPS
        for version in SCHEMA_VERSIONS:
            # strict: an unknown or misspelt field is an error, not silently dropped
            kubernetes_validate.validate(obj, version, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "llm-gateway"


def test_the_root_kustomization_is_the_base() -> None:
    assert render(TARGETS["root"]) == render(str(K8S / "base"))


@pytest.mark.parametrize("target", list(TARGETS))
def test_deployment_contract(target: str) -> None:
    objs = render(TARGETS[target])
    dep = find(objs, "Deployment", "llm-gateway")
    assert dep["metadata"]["labels"]["app"] == "llm-gateway"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "llm-gateway"}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "llm-gateway"
    spec = pod["spec"]
    c = container(objs)

    # probes, on the gateway's own routes and its named API port
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] in ROUTES
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(c)
    assert ports == {
        "http": int(env["SERVER_PORT"]["value"]),
        "metrics": int(env["METRICS_PORT"]["value"]),
    }
    assert ports == {"http": 8080, "metrics": 9090}
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(ports["metrics"])
    assert ann["prometheus.io/path"] == "/metrics"

    # non-root 1000, read-only root, no escalation, no capabilities
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    sc = c["securityContext"]
    assert sc["runAsUser"] == 1000 and sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]

    # what the process writes lives on emptyDirs: the multiprocess metrics dir and /tmp
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert "emptyDir" in volumes[mounts[metrics_dir]]
    assert "emptyDir" in volumes[mounts["/tmp"]]

    # the config file from the generated ConfigMap, valid for the gateway
    config_dir = os.path.dirname(env["GATEWAY_CONFIG"]["value"])
    cm_name = volumes[mounts[config_dir]]["configMap"]["name"]
    cm = find(objs, "ConfigMap", cm_name)
    assert cm_name.startswith("llm-gateway-config-")  # hash suffix: a change rolls out
    text = cm["data"][os.path.basename(env["GATEWAY_CONFIG"]["value"])]
    assert text == (K8S / "base" / "gateway.yaml").read_text()

    # provider keys from the Secret, each optional (absent: the provider stays disabled)
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs["OPENAI_API_KEY"]["key"] == "openai-api-key"
    assert refs["ANTHROPIC_API_KEY"]["key"] == "anthropic-api-key"
    for ref in refs.values():
        assert ref["name"] == "llm-provider-secrets" and ref["optional"] is True

    # service account without a token; zones spread; a grace period for the longest stream
    sa = find(objs, "ServiceAccount", spec["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    assert spec["automountServiceAccountToken"] is False
    keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
    assert "topology.kubernetes.io/zone" in keys
    for t in spec["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"] == {"app": "llm-gateway"}
    # graceful shutdown: readiness 503 for the pre-stop delay, then the drain period,
    # which fits the longest stream, all inside the grace period with room to settle
    cfg = load_config(K8S / "base" / "gateway.yaml", environ={})
    longest_stream = max(d.timeout.total for m in cfg.models for d in m.deployments)
    prestop = int(env["GATEWAY_PRESTOP_SECONDS"]["value"])
    drain = int(env["GATEWAY_DRAIN_SECONDS"]["value"])
    assert drain >= longest_stream and prestop >= 5
    assert spec["terminationGracePeriodSeconds"] >= prestop + drain + 15
    assert "lifecycle" not in c  # the gateway's own pre-stop delay, not a sleep hook


@pytest.mark.parametrize("target", list(TARGETS))
def test_service_pdb_hpa_networkpolicy(target: str) -> None:
    objs = render(TARGETS[target])
    svc = find(objs, "Service", "llm-gateway-service")
    assert svc["spec"]["selector"] == {"app": "llm-gateway"}
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"http": (80, "http"), "metrics": (9090, "metrics")}
    headless = find(objs, "Service", "llm-gateway-metrics")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True

    pdb = find(objs, "PodDisruptionBudget", "llm-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "llm-gateway"}
    assert pdb["spec"]["maxUnavailable"] == 1

    hpa = find(objs, "HorizontalPodAutoscaler", "llm-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llm-gateway",
    }
    assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    np = find(objs, "NetworkPolicy", "llm-gateway")["spec"]
    assert np["podSelector"]["matchLabels"] == {"app": "llm-gateway"}
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    ingress = {
        r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [
            p["port"] for p in r["ports"]
        ]
        for r in np["ingress"]
    }
    assert ingress == {"ingress-nginx": [8080], "monitoring": [9090]}
    egress_ports = sorted((p["protocol"], p["port"]) for r in np["egress"] for p in r["ports"])
    assert egress_ports == [("TCP", 53), ("TCP", 443), ("TCP", 4318), ("TCP", 6379), ("UDP", 53)]
    otlp = next(r for r in np["egress"] if any(p["port"] == 4318 for p in r["ports"]))
    assert otlp["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    dns = next(r for r in np["egress"] if any(p["port"] == 53 for p in r["ports"]))
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sizes_and_redis(overlay: str) -> None:
    objs = render(TARGETS[overlay])
    req_cpu, req_mem, lim_cpu, lim_mem, replicas, hpa_min, hpa_max, workers = SIZES[overlay]
    c = container(objs)
    assert c["resources"] == {
        "requests": {"cpu": req_cpu, "memory": req_mem},
        "limits": {"cpu": lim_cpu, "memory": lim_mem},
    }
    assert "args" not in c  # workers from GATEWAY_WORKERS, which matches the CPU limit
    assert env_of(c)["GATEWAY_WORKERS"]["value"] == workers == lim_cpu.removesuffix("000m")
    tracing = env_of(c).get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if overlay != "small":
        assert tracing is not None and tracing["value"].endswith(":4318")
    dep = find(objs, "Deployment", "llm-gateway")
    assert dep["spec"]["replicas"] == replicas
    hpa = find(objs, "HorizontalPodAutoscaler", "llm-gateway")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (hpa_min, hpa_max)
    redis_url = env_of(c)["REDIS_URL"]["value"]
    if overlay == "small":
        assert redis_url.startswith("rediss://")
    else:  # a Redis Cluster URL, which the gateway's settings accept
        assert redis_url.startswith("rediss+cluster://")
    from gateway.settings import Settings

    assert Settings.from_env({"REDIS_URL": redis_url}).redis_url == redis_url


def test_base_runs_without_redis() -> None:
    assert "REDIS_URL" not in env_of(container(render(TARGETS["root"])))


@pytest.mark.parametrize("target", list(TARGETS))
def test_only_variables_the_gateway_reads(target: str) -> None:
    names = set(env_of(container(render(TARGETS[target]))))
    assert names <= gateway_env_names(), names - gateway_env_names()


def test_base_config_is_valid() -> None:
    cfg = load_config(K8S / "base" / "gateway.yaml", environ={})
    assert {m.alias for m in cfg.models} >= {"demo"}


def test_secret_example_matches_the_references() -> None:
    import kubernetes_validate

    secret = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container(render(TARGETS["root"]))["env"]
        if "valueFrom" in e
    }
    assert secret["metadata"]["name"] == "llm-provider-secrets"
    assert set(secret["stringData"]) == refs


def test_external_secrets_component(tmp_path: Path) -> None:
    """An overlay with the component renders an ExternalSecret that writes the Secret the
    Deployment reads, with the keys it reads (a CRD: checked by shape, there is no schema
    for it in the Kubernetes set)."""
    overlay = tmp_path / "with-external-secrets"
    overlay.mkdir()
    rel = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel}/overlays/production]\n"
        f"components: [{rel}/components/external-secrets]\n"
    )
    objs = render(str(overlay))
    es = find(objs, "ExternalSecret", "llm-provider-secrets")
    assert es["apiVersion"].startswith("external-secrets.io/")
    assert es["metadata"]["namespace"] == "llm-gateway"
    assert es["spec"]["target"]["name"] == "llm-provider-secrets"
    assert es["spec"]["secretStoreRef"]["kind"] in ("SecretStore", "ClusterSecretStore")
    keys = {d["secretKey"] for d in es["spec"]["data"]}
    assert {"openai-api-key", "anthropic-api-key"} <= keys
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in container(objs)["env"] if "valueFrom" in e
    }
    assert keys <= refs
