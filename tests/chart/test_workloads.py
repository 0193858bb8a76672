"""Gateways, workers and the migrations hook: probes, drain, GPUs, rollouts, volumes."""

from __future__ import annotations

import json

import pytest

from tests.chart.rendered import (
    Manifest,
    containers,
    env_of,
    pod_spec,
    render,
    run_helm,
    template_args,
)

ALL = ("minimal", "full", "external-db", "several-models")


def worker(values: str, model: str) -> Manifest:
    return render(values).one("Deployment", f"-worker-{model}")


def limits(workload: Manifest) -> dict[str, object]:
    return dict(containers(workload)[0]["resources"].get("limits", {}))


# --- migrations ---------------------------------------------------------------------------


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook() -> None:
    job = render("minimal").one("Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert int(annotations["helm.sh/hook-weight"]) == 0
    assert containers(job)[0]["command"] == ["enclave", "migrate", "--wait", "300"]
    assert 0 <= job["spec"]["backoffLimit"] <= 3
    assert 0 < job["spec"]["activeDeadlineSeconds"] <= 3600
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_migrations_need_nothing_the_release_creates() -> None:
    """A pre-install hook runs before the release's ConfigMap and ServiceAccount exist."""
    rendered = render("minimal")
    job = rendered.one("Job", "-migrate")
    container = containers(job)[0]
    assert "envFrom" not in container
    created = {
        d["metadata"]["name"]
        for d in rendered.docs
        if "helm.sh/hook" not in d["metadata"].get("annotations", {})
    }
    assert pod_spec(job).get("serviceAccountName") not in created
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        assert ref is None or ref["name"] not in created


# --- gateway ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", ALL)
def test_probes_hit_the_management_port(values: str) -> None:
    rendered = render(values)
    for workload in rendered.of_kind("Deployment"):
        container = containers(workload)[0]
        if container["command"][0] != "enclave":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["management"] == 9000
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == "management", probe
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("values", ["minimal", "full"])
def test_gateway_drains_streams_before_it_is_killed(values: str) -> None:
    rendered = render(values)
    gateway = rendered.one("Deployment", "-gateway")
    container = containers(gateway)[0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep_s = int(command[1])
    assert sleep_s > 0
    drain_s = int(rendered.configmap_data()["ENCLAVE_HTTP__DRAIN_TIMEOUT_S"])
    assert pod_spec(gateway)["terminationGracePeriodSeconds"] > sleep_s + drain_s
    assert container["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    result = run_helm(*template_args("minimal", ("gateway.terminationGracePeriodSeconds=20",)))
    assert result.returncode != 0
    assert "must exceed preStopSleepS + drainTimeoutS" in result.stderr


def test_gateway_spreads_over_nodes_and_has_resources() -> None:
    gateway = render("minimal").one("Deployment", "-gateway")
    spec = pod_spec(gateway)
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    resources = containers(gateway)[0]["resources"]
    assert resources["requests"]["cpu"]
    assert resources["limits"]["memory"]


def test_hpa_scales_the_gateway_and_owns_its_replicas() -> None:
    rendered = render("full")
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    gateway = rendered.one("Deployment", "-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == gateway["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert "replicas" not in gateway["spec"]
    assert not render("minimal").of_kind("HorizontalPodAutoscaler")
    assert render("minimal").one("Deployment", "-gateway")["spec"]["replicas"] == 2


def test_ingress_routes_only_to_the_gateway_http_port_with_tls() -> None:
    rendered = render("full")
    (ingress,) = rendered.of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "llm-example-internal-tls", "hosts": ["llm.example.internal"]}
    ]
    gateway_service = rendered.one("Service", "-gateway")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend == {
                "name": gateway_service["metadata"]["name"],
                "port": {"name": "http"},
            }
    assert [p["targetPort"] for p in gateway_service["spec"]["ports"]] == ["http"]
    assert not render("minimal").of_kind("Ingress")


def test_disruption_budgets_cover_gateways_and_every_model() -> None:
    rendered = render("several-models")
    budgets = {
        d["metadata"]["name"].removeprefix("enclave-test-")
        for d in rendered.of_kind("PodDisruptionBudget")
    }
    assert budgets == {"gateway", "worker-chat", "worker-code", "worker-embed"}
    for budget in rendered.of_kind("PodDisruptionBudget"):
        assert budget["spec"]["maxUnavailable"] == 1


# --- config checksum ----------------------------------------------------------------------


def checksums(*sets: str) -> tuple[str, str]:
    rendered = render("minimal", *sets)
    gateway = rendered.one("Deployment", "-gateway")
    chat = rendered.one("Deployment", "-worker-chat")
    return (
        gateway["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
        chat["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
    )


def test_config_checksum_changes_with_the_config_only() -> None:
    base = checksums()
    assert len(base[0]) == 64
    assert checksums("config.logLevel=DEBUG")[0] != base[0]
    assert checksums("config.logLevel=DEBUG")[1] != base[1]
    assert checksums("config.queue.request_timeout_s=900") != base
    assert checksums("gateway.replicas=3") == base  # not in the ConfigMap: no restart


# --- workers ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", ALL)
def test_worker_rollouts_never_need_more_gpus(values: str) -> None:
    workers = render(values).workers()
    assert workers
    for deployment in workers:
        strategy = deployment["spec"]["strategy"]
        if strategy["type"] == "RollingUpdate":
            assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        else:
            assert strategy == {"type": "Recreate"}


def test_gpu_resources_come_from_values() -> None:
    assert limits(worker("minimal", "chat"))["nvidia.com/gpu"] == 1
    assert limits(worker("full", "chat"))["nvidia.com/gpu"] == 2
    mig = limits(worker("several-models", "code"))
    assert mig["nvidia.com/mig-1g.10gb"] == 1
    assert "nvidia.com/gpu" not in mig
    cpu = worker("several-models", "embed")
    assert not [name for name in limits(cpu) if "/" in name], "a CPU model gets no GPU"
    assert "/enclave-worker-cpu:" in containers(cpu)[0]["image"]
    assert "/enclave-worker-cuda:" in containers(worker("several-models", "chat"))[0]["image"]


def test_gpu_scheduling_settings_per_model() -> None:
    code = pod_spec(worker("several-models", "code"))
    assert code["runtimeClassName"] == "nvidia-mig"
    assert code["nodeSelector"] == {"nvidia.com/mig.config": "all-1g.10gb"}
    assert code["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert worker("several-models", "code")["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_spec(worker("several-models", "chat"))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod_spec(worker("several-models", "embed"))


def test_engine_settings_reach_the_worker() -> None:
    env = {k: v.get("value") for k, v in env_of(containers(worker("full", "chat"))[0]).items()}
    assert env["ENCLAVE_WORKER__MODEL_PATH"] == "/models/qwen2.5-7b-instruct"
    assert env["ENCLAVE_WORKER__SERVED_MODEL_NAME"] == "qwen2.5-7b"
    assert env["ENCLAVE_WORKER__MAX_NUM_SEQS"] == "128"
    assert env["ENCLAVE_WORKER__MAX_MODEL_LEN"] == "32768"
    assert env["ENCLAVE_WORKER__GPU_MEMORY_UTILIZATION"] == "0.92"
    assert env["ENCLAVE_WORKER__DTYPE"] == "bfloat16"
    assert env["ENCLAVE_WORKER__TOOL_CALL_PARSER"] == "hermes"
    embed = {
        k: v.get("value")
        for k, v in env_of(containers(worker("several-models", "embed"))[0]).items()
    }
    assert embed["ENCLAVE_WORKER__RUNNER"] == "pooling"
    assert embed["ENCLAVE_WORKER__CPU_KVCACHE_SPACE_GIB"] == "2"
    assert "ENCLAVE_WORKER__GPU_MEMORY_UTILIZATION" not in embed


def test_workers_drain_long_and_start_slowly() -> None:
    chat = worker("minimal", "chat")
    assert pod_spec(chat)["terminationGracePeriodSeconds"] == 600
    startup = containers(chat)[0]["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60
    assert pod_spec(worker("several-models", "embed"))["terminationGracePeriodSeconds"] == 120


@pytest.mark.parametrize("values", ALL)
def test_workers_have_shared_memory_and_read_only_models(values: str) -> None:
    rendered = render(values)
    for deployment in rendered.workers():
        spec = pod_spec(deployment)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in containers(deployment)[0]["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
        assert shm["medium"] == "Memory"
        assert shm["sizeLimit"]
        models = mounts["/models"]
        assert models["readOnly"] is True
        claim = volumes[models["name"]]["persistentVolumeClaim"]
        assert claim["readOnly"] is True
        env = env_of(containers(deployment)[0])
        assert env["ENCLAVE_WORKER__MODEL_PATH"]["value"].startswith("/models/")


def test_model_claim_is_created_or_existing() -> None:
    (claim,) = render("minimal").of_kind("PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    name = pod_spec(worker("minimal", "chat"))["volumes"]
    assert {
        "name": "models",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
    } in name
    assert not render("external-db").of_kind("PersistentVolumeClaim")
    volumes = pod_spec(worker("external-db", "chat"))["volumes"]
    assert {
        "name": "models",
        "persistentVolumeClaim": {"claimName": "shared-models", "readOnly": True},
    } in volumes


def test_a_model_name_used_twice_is_refused() -> None:
    result = run_helm(*template_args("minimal", ("models[1].name=chat", "models[1].path=other")))
    assert result.returncode != 0
    assert "used twice" in result.stderr


# --- settings -----------------------------------------------------------------------------


def test_config_map_speaks_the_application_settings() -> None:
    data = render("full").configmap_data()
    assert data["ENCLAVE_HTTP__HOST"] == "0.0.0.0"
    assert data["ENCLAVE_HTTP__PORT"] == "8080"
    assert data["ENCLAVE_HTTP__MANAGEMENT_PORT"] == "9000"
    assert data["ENCLAVE_HTTP__DRAIN_TIMEOUT_S"] == "120"
    assert data["ENCLAVE_LOG_LEVEL"] == "WARNING"
    assert data["ENCLAVE_LOG_FORMAT"] == "json"
    assert data["ENCLAVE_STATE_DIR"] == "/var/lib/enclave"
    assert data["ENCLAVE_MODEL_DIR"] == "/models"
    assert data["ENCLAVE_AUDIT__ORIGIN"] == "llm.example.internal/audit"
    assert data["ENCLAVE_TELEMETRY__OTLP_ENDPOINT"] == (
        "http://otel-collector.observability:4318/v1/traces"
    )
    assert data["ENCLAVE_QUEUE__REQUEST_TIMEOUT_S"] == "900"
    assert data["ENCLAVE_QUEUE__SCHEDULING"] == "fair"
    assert data["ENCLAVE_QUOTA__FAIL_OPEN"] == "false"
    assert json.loads(data["ENCLAVE_OLLAMA__ALIASES"]) == {"llama3:8b": "chat"}
    (issuer,) = json.loads(data["ENCLAVE_OIDC__ISSUERS"])
    assert issuer["issuer"] == "https://sso.example.internal/realms/staff"
    assert issuer["audiences"] == ["enclave"]
    assert "ENCLAVE_TELEMETRY__OTLP_ENDPOINT" not in render("minimal").configmap_data()


def test_every_enclave_container_reads_the_config_map() -> None:
    rendered = render("several-models")
    (configmap,) = rendered.of_kind("ConfigMap")
    for deployment in rendered.of_kind("Deployment"):
        container = containers(deployment)[0]
        if container["command"][0] != "enclave":
            continue
        assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
