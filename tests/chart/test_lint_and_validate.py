"""Every ci scenario lints strictly and renders manifests valid for Kubernetes.

kubernetes-validate holds the Kubernetes OpenAPI schemas offline; it only warns on kinds it
has no schema for, so CRD kinds are taken out first (and checked in test_monitoring.py) and
any other warning fails the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart.rendered import CHART, MONITORING_API, SCENARIOS, render_text, run_helm

# The newest Kubernetes kubernetes-validate 1.37.0 ships, and the one helm 4.1.4 is built for.
KUBERNETES_VERSIONS = ("1.37.0", "1.35.0")
CRD_KINDS = {"ServiceMonitor"}


def test_every_scenario_is_covered() -> None:
    names = {path.name for path in SCENARIOS}
    assert {
        "minimal-values.yaml",
        "full-values.yaml",
        "external-db-values.yaml",
        "several-models-values.yaml",
    } <= names


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_helm_lint_strict(values: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_rendered_manifests_validate_strictly(values: Path, kubernetes_version: str) -> None:
    text = render_text(values.name.removesuffix("-values.yaml"), (), (MONITORING_API,))
    docs = [d for d in yaml.safe_load_all(text) if d]
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert core, "nothing rendered"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "kubernetes_validate", "--strict"),
            *("--kubernetes-version", kubernetes_version, "-"),
        ],
        input=yaml.safe_dump_all(core),
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in output, output  # a kind without a schema would pass unchecked
    assert output.count(" passed for resource ") == len(core), output
