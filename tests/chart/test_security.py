"""Secure defaults on every pod and container, and no credential anywhere in a manifest."""

from __future__ import annotations

import re

import pytest

from tests.chart.rendered import (
    MONITORING_API,
    containers,
    env_of,
    pod_spec,
    render,
    strings_in,
)

ALL = ("minimal", "full", "external-db", "several-models")
# Variables that carry a credential (a URL with its password, or an issuer's client secret).
CREDENTIAL_ENV = {
    "ENCLAVE_DATABASE__URL",
    "ENCLAVE_AUDIT__DATABASE_URL",
    "ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL",
    "ENCLAVE_REDIS__URL",
    "REDIS_PASSWORD",
}
URL_WITH_CREDENTIALS = re.compile(r"://[^/\s:@]*:[^/\s@]+@")


@pytest.mark.parametrize("values", ALL)
def test_every_pod_runs_as_non_root_with_runtime_default_seccomp(values: str) -> None:
    workloads = render(values).workloads()
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        context = spec["securityContext"]
        name = workload["metadata"]["name"]
        assert context["runAsNonRoot"] is True, name
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (
            10001,
            10001,
            10001,
        ), name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name


@pytest.mark.parametrize("values", ALL)
def test_every_container_is_locked_down(values: str) -> None:
    for workload in render(values).workloads():
        tmp_volumes = {
            v["name"] for v in pod_spec(workload)["volumes"] if v.get("emptyDir") is not None
        }
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "add" not in context["capabilities"], container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["runAsNonRoot"] is True, container["name"]
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{container['name']}: no /tmp"
            assert tmp[0]["name"] in tmp_volumes, f"{container['name']}: /tmp is no emptyDir"


@pytest.mark.parametrize("values", ALL)
def test_enclave_containers_have_a_writable_state_dir(values: str) -> None:
    rendered = render(values)
    for workload in rendered.workloads():
        for container in containers(workload):
            if container["command"][0] != "enclave":
                continue
            state_dir = "/var/lib/enclave"
            assert any(m["mountPath"] == state_dir for m in container["volumeMounts"])


def test_service_account_does_not_mount_a_token() -> None:
    (account,) = render("minimal").of_kind("ServiceAccount")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", ALL)
def test_images_are_pinned_and_pulled_if_not_present(values: str) -> None:
    for workload in render(values).workloads():
        for container in containers(workload):
            image = container["image"]
            name_and_tag = image.split("@")[0]
            assert re.search(r":[\w][\w.-]*$", name_and_tag), f"{image} has no tag"
            assert not name_and_tag.endswith(":latest"), image
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_tag_defaults_to_app_version_and_digest_pins() -> None:
    minimal = render("minimal").one("Deployment", "-gateway")
    assert containers(minimal)[0]["image"].endswith("/enclave-gateway:0.1.0")
    full = render("full").one("Deployment", "-gateway")
    assert containers(full)[0]["image"].endswith("enclave-gateway:0.1.0@sha256:" + "0" * 63 + "1")
    assert pod_spec(full)["imagePullSecrets"] == [{"name": "registry-credentials"}]


@pytest.mark.parametrize("values", ALL)
def test_credentials_come_only_from_secret_key_refs(values: str) -> None:
    seen = set()
    for workload in render(values).workloads():
        for container in containers(workload):
            for name, entry in env_of(container).items():
                if name in CREDENTIAL_ENV:
                    seen.add(name)
                    assert "value" not in entry, f"{name} is inlined"
                    ref = entry["valueFrom"]["secretKeyRef"]
                    assert ref["name"], name
                    assert ref["key"], name
    assert "ENCLAVE_REDIS__URL" in seen


def test_every_database_url_is_a_secret_key_ref() -> None:
    gateway = render("external-db").one("Deployment", "-gateway")
    env = env_of(containers(gateway)[0])
    refs = {
        name: (
            env[name]["valueFrom"]["secretKeyRef"]["name"],
            env[name]["valueFrom"]["secretKeyRef"]["key"],
        )
        for name in (
            "ENCLAVE_DATABASE__URL",
            "ENCLAVE_AUDIT__DATABASE_URL",
            "ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL",
            "ENCLAVE_OIDC__ISSUERS",
        )
    }
    assert refs == {
        "ENCLAVE_DATABASE__URL": ("enclave-database", "app-url"),
        "ENCLAVE_AUDIT__DATABASE_URL": ("enclave-audit-database", "audit-url"),
        "ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL": ("enclave-audit-database", "sequencer-url"),
        "ENCLAVE_OIDC__ISSUERS": ("enclave-oidc", "issuers.json"),
    }


@pytest.mark.parametrize("values", ALL)
def test_no_plaintext_secret_in_any_manifest(values: str) -> None:
    rendered = render(values, api_versions=(MONITORING_API,))
    assert not rendered.of_kind("Secret"), "the chart must not create Secrets"
    for doc in rendered.docs:
        for text in strings_in(doc):
            assert not URL_WITH_CREDENTIALS.search(text), f"{doc['kind']}: {text}"
    for key, text in rendered.configmap_data().items():
        assert "password" not in text.lower(), key
        assert "secret" not in text.lower(), key
    for workload in rendered.workloads():
        for container in containers(workload):
            for entry in container.get("env", []):
                value = entry.get("value", "")
                assert "password" not in value.lower(), entry["name"]
                assert not URL_WITH_CREDENTIALS.search(value), entry["name"]


def test_migrations_and_workers_get_only_what_they_need() -> None:
    rendered = render("external-db")
    for worker in rendered.workers():
        env = env_of(containers(worker)[0])
        assert not {n for n in env if "DATABASE" in n}, "workers do not use the database"
        assert "ENCLAVE_OIDC__ISSUERS" not in env
    job = rendered.one("Job", "-migrate")
    env = env_of(containers(job)[0])
    assert "ENCLAVE_DATABASE__URL" in env
    assert "ENCLAVE_AUDIT__DATABASE_URL" in env


def test_audit_keys_are_mounted_read_only_group_readable() -> None:
    gateway = render("external-db").one("Deployment", "-gateway")
    volumes = {v["name"]: v for v in pod_spec(gateway)["volumes"]}
    secret = volumes["audit-keys"]["secret"]
    assert secret["secretName"] == "enclave-audit-keys"
    assert secret["defaultMode"] == 0o440
    assert {i["key"] for i in secret["items"]} == {
        "checkpoint-ed25519.key",
        "content-master.hex",
        "pseudonym-hmac.hex",
    }
    container = containers(gateway)[0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "audit-keys"]
    assert mount["readOnly"] is True
    env = env_of(container)
    for name in (
        "ENCLAVE_AUDIT__SIGNING_KEY_FILE",
        "ENCLAVE_AUDIT__CONTENT_KEY_FILE",
        "ENCLAVE_AUDIT__PSEUDONYM_KEY_FILE",
    ):
        assert env[name]["value"].startswith(mount["mountPath"] + "/"), name


def test_embedded_redis_is_as_locked_down_and_uses_a_secret() -> None:
    rendered = render("full")
    redis = rendered.one("Deployment", "-redis")
    (container,) = containers(redis)
    assert re.search(r"redis:\d+\.\d+\.\d+", container["image"]), container["image"]
    password = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "enclave-embedded-redis", "key": "password"}
    assert "$(REDIS_PASSWORD)" in container["args"]
    gateway = rendered.one("Deployment", "-gateway")
    url = env_of(containers(gateway)[0])["ENCLAVE_REDIS__URL"]["valueFrom"]["secretKeyRef"]
    assert url == {"name": "enclave-embedded-redis", "key": "url"}
    assert all(not d["metadata"]["name"].endswith("-redis") for d in render("minimal").docs)
