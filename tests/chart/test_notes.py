"""NOTES.txt and the packaged chart, through the real helm (client-side, no cluster)."""

from __future__ import annotations

from pathlib import Path

from tests.chart.rendered import CHART, NAMESPACE, RELEASE, run_helm, scenario


def notes(values: str, *sets: str) -> str:
    args = ["install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE]
    args += ["-f", str(scenario(values))]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_tell_how_to_reach_it_and_create_the_first_admin_key() -> None:
    text = notes("minimal")
    assert f"port-forward svc/{RELEASE}-gateway" in text
    assert f"kubectl -n {NAMESPACE} exec deploy/{RELEASE}-gateway" in text
    assert "enclave keys create --tenant ops --user admin --role platform_admin" in text
    assert "WARNING" not in text
    assert "https://llm.example.internal/v1/models" in notes("full")


def test_notes_warn_about_evaluation_and_insecure_options() -> None:
    assert "for evaluation only" in notes("full")
    assert "networkPolicy.enabled is off" in notes("minimal", "networkPolicy.enabled=false")
    no_tls = notes("minimal", "ingress.enabled=true", "ingress.hosts[0].host=llm.example.internal")
    assert "the Ingress has no TLS" in no_tls


def test_the_chart_packages_for_an_offline_install(tmp_path: Path) -> None:
    result = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("enclave-*.tgz")
    lint = run_helm("lint", "--strict", str(archive), "-f", str(scenario("minimal")))
    assert lint.returncode == 0, lint.stdout + lint.stderr
