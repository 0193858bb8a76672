"""values.schema.json: unknown keys, wrong types, `latest` and inlined secrets are refused
by both `helm lint --strict` and `helm template` (so by install too)."""

from __future__ import annotations

import pytest

from tests.chart.rendered import CHART, run_helm, scenario, template_args

REFUSED = [
    pytest.param(("bogus=1",), "additional properties 'bogus'", id="unknown-top-level-key"),
    pytest.param(
        ("gateway.replica=3",), "additional properties 'replica'", id="unknown-nested-key"
    ),
    pytest.param(("models[0].gpus=2",), "additional properties 'gpus'", id="unknown-model-key"),
    pytest.param(("gateway.image.tag=latest",), "/gateway/image/tag", id="gateway-latest"),
    pytest.param(("worker.image.cuda.tag=latest",), "/worker/image/cuda/tag", id="worker-latest"),
    pytest.param(
        ("redis.embedded.image.tag=latest",), "/redis/embedded/image/tag", id="redis-latest"
    ),
    pytest.param(("gateway.replicas=two",), "/gateway/replicas", id="wrong-type"),
    pytest.param(("models[0].device=tpu",), "/models/0/device", id="wrong-enum"),
    pytest.param(("models[0].name=Chat_Model",), "/models/0/name", id="not-a-dns-label"),
    pytest.param(
        ("database.url.value=postgresql+asyncpg://enclave:hunter2@db/enclave",),
        "additional properties 'value'",
        id="inlined-database-url",
    ),
    pytest.param(
        ("database.password=hunter2",), "additional properties 'password'", id="inlined-password"
    ),
    pytest.param(
        (
            "oidc.issuers[0].issuer=https://sso.example.internal",
            "oidc.issuers[0].audiences[0]=enclave",
            "oidc.issuers[0].introspection_client_secret=hunter2",
        ),
        "introspection_client_secret",
        id="inlined-introspection-secret",
    ),
]


@pytest.mark.parametrize(("sets", "message"), REFUSED)
def test_template_refuses(sets: tuple[str, ...], message: str) -> None:
    result = run_helm(*template_args("minimal", sets))
    assert result.returncode != 0
    assert message in result.stderr
    assert "hunter2" not in result.stdout


@pytest.mark.parametrize(("sets", "message"), REFUSED)
def test_lint_refuses(sets: tuple[str, ...], message: str) -> None:
    args = ["lint", "--strict", str(CHART), "-f", str(scenario("minimal"))]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_the_same_values_without_the_mistake_pass() -> None:
    """The refusals above are the schema's doing, not a broken baseline."""
    assert run_helm(*template_args("minimal", ("gateway.replicas=3",))).returncode == 0
    result = run_helm(
        *template_args(
            "minimal",
            (
                "oidc.issuers[0].issuer=https://sso.example.internal",
                "oidc.issuers[0].audiences[0]=enclave",
            ),
        )
    )
    assert result.returncode == 0, result.stderr


def test_required_secrets_are_named_in_the_error() -> None:
    result = run_helm(*template_args("minimal", ("audit.keys.existingSecret=",)))
    assert result.returncode != 0
    assert "audit.keys.existingSecret" in result.stderr
    result = run_helm(*template_args("minimal", ("database.url.existingSecret=",)))
    assert result.returncode != 0
    assert "database.url: set its existingSecret" in result.stderr
