"""Every ENCLAVE_* variable the chart sets is a setting Enclave reads: Settings ignores
unknown variables, so a misspelt name in a template would silently do nothing."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gateway.settings import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings
from tests.chart.rendered import SCENARIOS, containers, render


def is_setting(variable: str) -> bool:
    """Whether ENCLAVE_A__B names field ``b`` of section ``a`` (or a top-level field)."""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER)
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        is_last = depth == len(parts) - 1
        if is_last:
            return True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return False


def test_the_name_check_itself_tells_settings_from_typos() -> None:
    assert is_setting("ENCLAVE_HTTP__MANAGEMENT_PORT")
    assert is_setting("ENCLAVE_STATE_DIR")
    assert not is_setting("ENCLAVE_HTTP__MANAGMENT_PORT")
    assert not is_setting("ENCLAVE_STATE_DIR__X")


@pytest.mark.parametrize("values", [p.name.removesuffix("-values.yaml") for p in SCENARIOS])
def test_every_enclave_variable_in_the_chart_is_a_setting(values: str) -> None:
    rendered = render(values, api_versions=("monitoring.coreos.com/v1",))
    names = {n for n in rendered.configmap_data() if n.startswith(ENV_PREFIX)}
    for workload in rendered.workloads():
        for container in containers(workload):
            names |= {e["name"] for e in container.get("env", [])}
    enclave = {n for n in names if n.startswith(ENV_PREFIX)}
    assert "ENCLAVE_HTTP__MANAGEMENT_PORT" in enclave
    assert sorted(n for n in enclave if not is_setting(n)) == []


def test_the_config_maps_values_load_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full scenario's ConfigMap, as the gateway reads it from its environment."""
    data = render("full", api_versions=("monitoring.coreos.com/v1",)).configmap_data()
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.http.management_port == int(data["ENCLAVE_HTTP__MANAGEMENT_PORT"])
    assert settings.http.host == "0.0.0.0"
