"""NetworkPolicies: default deny for the release, then the few paths Enclave needs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.rendered import Manifest, Rendered, render, selects

ALL = ("minimal", "full", "external-db", "several-models")
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def policy(rendered: Rendered, component: str) -> Manifest:
    return rendered.one("NetworkPolicy", f"-{component}")


def ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule["ports"]}


def egress_ports(manifest: Manifest) -> set[int]:
    return {p for rule in manifest["spec"]["egress"] for p in ports(rule)}


@pytest.mark.parametrize("values", ALL)
def test_default_deny_selects_every_pod_of_the_release(values: str) -> None:
    rendered = render(values)
    deny = policy(rendered, "default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    assert selector["app.kubernetes.io/instance"] == "enclave-test"
    for workload in rendered.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(selector, labels), workload["metadata"]["name"]
        allowing = [
            p
            for p in rendered.of_kind("NetworkPolicy")
            if p is not deny and selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert len(allowing) == 1, f"{workload['metadata']['name']}: {len(allowing)} allow-lists"


@pytest.mark.parametrize(
    ("values", "ingress_namespace", "prometheus_namespace"),
    [("minimal", "ingress-nginx", "monitoring"), ("full", "ingress-system", "observability")],
)
def test_gateways_admit_only_the_ingress_controller_and_prometheus(
    values: str, ingress_namespace: str, prometheus_namespace: str
) -> None:
    rules = policy(render(values), "gateway")["spec"]["ingress"]
    assert len(rules) == 2
    http, management = rules
    assert http["ports"] == [{"port": 8080, "protocol": "TCP"}]
    (controller,) = http["from"]
    assert controller["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": ingress_namespace
    }
    assert management["ports"] == [{"port": 9000, "protocol": "TCP"}]
    (prometheus,) = management["from"]
    assert prometheus["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": prometheus_namespace
    }
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


@pytest.mark.parametrize("values", ALL)
def test_workers_admit_only_prometheus_on_the_management_port(values: str) -> None:
    rendered = render(values)
    (rule,) = policy(rendered, "worker")["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector", "podSelector"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "ingress" not in policy(rendered, "migrations")["spec"]


# Egress ports per component: DNS, then PostgreSQL, Redis, OTLP and extraEgress as configured.
EGRESS_PORTS = {
    "minimal": {"gateway": {53, 5432, 6379}, "worker": {53, 6379}, "migrations": {53, 5432}},
    "full": {
        "gateway": {53, 5432, 6379, 4318, 443},
        "worker": {53, 6379, 4318},
        "migrations": {53, 5432},
    },
    "external-db": {
        "gateway": {53, 5432, 6432, 6379},
        "worker": {53, 6379},
        "migrations": {53, 5432, 6432},
    },
    "several-models": {
        "gateway": {53, 5432, 6379},
        "worker": {53, 6379},
        "migrations": {53, 5432},
    },
}


@pytest.mark.parametrize("values", ALL)
def test_egress_is_dns_and_the_configured_services_only(values: str) -> None:
    rendered = render(values)
    for component, expected in EGRESS_PORTS[values].items():
        egress = policy(rendered, component)["spec"]["egress"]
        dns = egress[0]
        assert dns["ports"] == DNS_PORTS
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        assert egress_ports(policy(rendered, component)) == expected, component


def test_minimal_egress_has_no_otlp_nor_extra_rules() -> None:
    gateway = policy(render("minimal"), "gateway")
    assert egress_ports(gateway) == {53, 5432, 6379}
    assert len(gateway["spec"]["egress"]) == 3


def test_full_egress_is_narrowed_to_the_configured_peers() -> None:
    rendered = render("full")
    egress = policy(rendered, "gateway")["spec"]["egress"]
    by_port = {p: rule for rule in egress for p in ports(rule)}
    assert by_port[5432]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    redis = by_port[6379]["to"][0]["podSelector"]["matchLabels"]
    assert redis["app.kubernetes.io/component"] == "redis"  # the embedded Redis only
    otlp = by_port[4318]["to"][0]
    assert otlp["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    jwks = by_port[443]  # extraEgress: the identity provider's JWKS host
    assert jwks["to"] == [{"ipBlock": {"cidr": "10.30.0.15/32"}}]
    assert 443 not in egress_ports(policy(rendered, "worker"))
    assert 4318 in egress_ports(policy(rendered, "worker"))


def test_embedded_redis_admits_only_gateways_and_workers() -> None:
    (rule,) = policy(render("full"), "redis")["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    components = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]
    }
    assert components == {"gateway", "worker"}
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])


def test_network_policies_can_be_turned_off() -> None:
    assert not render("minimal", "networkPolicy.enabled=false").of_kind("NetworkPolicy")
