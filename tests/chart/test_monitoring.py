"""Metrics: a headless Service over the management ports, and a ServiceMonitor only when
asked for and the Prometheus Operator's API exists."""

from __future__ import annotations

from tests.chart.rendered import MONITORING_API, render, selects


def test_service_monitor_needs_the_flag_and_the_capability() -> None:
    assert render("full", api_versions=(MONITORING_API,)).of_kind("ServiceMonitor")
    assert not render("full").of_kind("ServiceMonitor")
    assert not render("minimal", api_versions=(MONITORING_API,)).of_kind("ServiceMonitor")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    rendered = render("full", api_versions=(MONITORING_API,))
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING_API
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["llm"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "management",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [s for s in rendered.of_kind("Service") if selects(selector, s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in matched] == ["enclave-test-metrics"]
    (service,) = matched
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["name"] == "management"
    assert service["spec"]["ports"][0]["port"] == 9000


def test_metrics_service_selects_gateways_and_workers_only() -> None:
    rendered = render("full")
    selector = rendered.one("Service", "-metrics")["spec"]["selector"]
    selected = {
        w["metadata"]["name"]
        for w in rendered.workloads()
        if selects(selector, w["spec"]["template"]["metadata"]["labels"])
    }
    assert selected == {"enclave-test-gateway", "enclave-test-worker-chat"}
