"""The chart rendered by the real helm binary, and queries over its manifests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.chart.helm_binary import ensure_helm

CHART = Path(__file__).resolve().parents[2] / "helm" / "enclave"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "enclave-test"
NAMESPACE = "llm"
MONITORING_API = "monitoring.coreos.com/v1"

Manifest = dict[str, Any]


def scenario(name: str) -> Path:
    """The ci values file of a scenario, e.g. ``full`` -> ci/full-values.yaml."""
    path = CHART / "ci" / f"{name}-values.yaml"
    assert path.is_file(), f"no scenario {path}"
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, check=False)


def template_args(
    values: str, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = ()
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(scenario(values))]
    for item in sets:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


@cache
def render_text(values: str, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = ()) -> str:
    """``helm template`` output; fails the test with helm's message if rendering fails."""
    result = run_helm(*template_args(values, sets, api_versions))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def render(values: str, *sets: str, api_versions: tuple[str, ...] = ()) -> Rendered:
    text = render_text(values, tuple(sets), api_versions)
    return Rendered([d for d in yaml.safe_load_all(text) if d])


@dataclass(frozen=True)
class Rendered:
    """The documents of one render."""

    docs: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_suffix: str) -> Manifest:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[Manifest]:
        """Everything that runs pods: Deployments and Jobs."""
        return [d for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]

    def workers(self) -> list[Manifest]:
        return [
            d
            for d in self.of_kind("Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
        ]

    def configmap_data(self) -> dict[str, str]:
        (configmap,) = self.of_kind("ConfigMap")
        return dict(configmap["data"])


def pod_spec(workload: Manifest) -> Manifest:
    return dict(workload["spec"]["template"]["spec"])


def containers(workload: Manifest) -> list[Manifest]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def strings_in(node: Any) -> Iterator[str]:
    """Every string value anywhere in a manifest."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector matches these labels."""
    return all(labels.get(key) == value for key, value in selector.items())
