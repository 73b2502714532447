"""The deployment files: the image, the compose stack and the Kubernetes manifests are
valid against their published schemas (offline: check-jsonschema's vendored Compose
specification, kubernetes-validate's bundled Kubernetes schemas, hadolint) and agree
with each other and with the sidecar on ports, names, paths and environment."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.cli.main import build_parser
from sidecar.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yaml"
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
ENV_REF = re.compile(r"os\.environ/([A-Z0-9_]+)")


def tool(name: str) -> str:
    found = BIN / name
    if not found.exists():
        pytest.fail(f"{name} is missing: it is in the dev extra (make .venv/.installed)")
    return str(found)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def serve_args(argv: list[str]) -> Any:
    """A container's `llm-sidecar serve ...` arguments, parsed by the real parser."""
    return build_parser().parse_args(argv)


def env_refs(text: str) -> set[str]:
    return set(ENV_REF.findall(text))


# -- the image -------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    done = run(tool("hadolint"), "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_serves_both_ports_as_non_root_with_a_grpc_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^EXPOSE 50051 4000$", final, re.MULTILINE)
    assert re.search(r"^USER 10001", final, re.MULTILINE)
    assert '"llm-sidecar", "health"' in final
    assert "gcc" not in final
    assert "build-essential" not in final
    cmd = re.search(r"^CMD \[(.*?)\]$", final.replace("\\\n", ""), re.MULTILINE | re.DOTALL)
    assert cmd
    args = serve_args([part.strip().strip('"') for part in cmd.group(1).split(",")])
    assert args.config == "/etc/llm-sidecar/config.yaml"
    assert (args.grpc_port, args.http_port) == (50051, 4000)
    assert "COPY examples/litellm_config.yaml /etc/llm-sidecar/config.yaml" in final


def test_the_lock_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n    --hash=sha256:", lock, re.MULTILINE)
    pinned = {name.lower() for name in pins}
    wanted = {
        re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }
    assert wanted - pinned == set()
    # Every pin carries its hashes (pip --require-hashes installs nothing unhashed).
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9_.-]+==", lock, re.MULTILINE))


# -- the compose stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    done = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_ports_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"ollama", "llm-sidecar", "open-webui", "postgres", "redis"}
    gpu = services["ollama"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "/api/tags" in str(services["ollama"]["healthcheck"]["test"])
    # Every service waited for is healthy first, and has a health check to say so.
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert "healthcheck" in services[needed], needed
    sidecar = services["llm-sidecar"]
    args = serve_args(sidecar["command"])
    assert sidecar["ports"] == [
        f"{args.grpc_port}:{args.grpc_port}",
        f"{args.http_port}:{args.http_port}",
    ]
    assert (args.grpc_port, args.http_port, args.host) == (50051, 4000, "0.0.0.0")
    assert f"./deploy/compose/config.yaml:{args.config}:ro" in sidecar["volumes"]
    assert "llm-sidecar" in sidecar["healthcheck"]["test"]
    assert int(sidecar["stop_grace_period"].rstrip("s")) > args.drain_seconds
    webui = services["open-webui"]["environment"]
    assert webui["OPENAI_API_BASE_URL"] == f"http://llm-sidecar:{args.http_port}/v1"
    # Named volumes: every one used is declared, every one declared is used.
    used = {
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(".")
    }
    assert used == set(compose["volumes"])


def test_compose_environment_references_resolve(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    declared = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert referenced - declared == set()
    # What the sidecar's config reads from its environment, the stack gives it.
    config_text = (ROOT / "deploy" / "compose" / "config.yaml").read_text(encoding="utf-8")
    given = set(compose["services"]["llm-sidecar"]["environment"])
    assert env_refs(config_text) - given == set()
    env = {name: "x" for name in given} | {"DATABASE_URL": "postgresql://a@postgres/b"}
    config = parse_config(yaml.safe_load(config_text), source="compose", env=env)
    hosts = {d.api_base.split("//")[1].split(":")[0] for d in config.deployments if d.api_base}
    assert "ollama" in hosts
    assert hosts & set(compose["services"]) == {"ollama"}
    assert "@redis:6379" in (config.budget.redis_url or "")


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    documents = [d for path in K8S for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))]
    return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}


def test_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    done = run(tool("kubernetes-validate"), "--strict", *map(str, K8S))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == 7


def _sidecars(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    found = []
    for (kind, _), doc in k8s.items():
        if kind == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            found += [(pod, c) for c in pod["containers"] if c["name"] == "llm-sidecar"]
    return found


def test_sidecar_containers_agree_with_their_probes_config_and_keys(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    sidecars = _sidecars(k8s)
    assert len(sidecars) == 2  # the app's sidecar and the gateway
    configmap = k8s[("ConfigMap", "llm-sidecar-config")]
    secret = k8s[("Secret", "llm-sidecar-keys")]
    config_text = configmap["data"]["config.yaml"]
    assert env_refs(config_text) <= set(secret["stringData"])
    parse_config(yaml.safe_load(config_text), source="configmap", env=dict(secret["stringData"]))
    for pod, container in sidecars:
        args = serve_args(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": args.grpc_port, "http": args.http_port}
        # The kubelet's gRPC probe connects to the pod's IP, not to loopback.
        assert args.host == "0.0.0.0"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == args.grpc_port
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == "llm-sidecar-config"
        assert f"{mounts['config']}/config.yaml" == args.config
        assert container["envFrom"] == [{"secretRef": {"name": "llm-sidecar-keys"}}]
        stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert stop + args.drain_seconds < pod["terminationGracePeriodSeconds"]
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_gateway_service_and_disruption_budget_select_its_pods(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = k8s[("Deployment", "llm-gateway")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    for name in ("llm-gateway", "llm-gateway-pods"):
        service = k8s[("Service", name)]
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = k8s[("PodDisruptionBudget", "llm-gateway")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    app = k8s[("Deployment", "chat-app")]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in app] == ["app", "llm-sidecar"]
