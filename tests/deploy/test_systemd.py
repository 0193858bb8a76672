"""deploy/systemd: the units migrate first, write only to their state directory and carry the
hardening that fits each (checked by `systemd-analyze verify` where systemd is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.deploy_files import DEPLOY_DIR, INSTALLED_ENCLAVE, SYSTEMD_UNITS, read_unit

GATEWAY = DEPLOY_DIR / "systemd" / "enclave-gateway.service"
WORKER = DEPLOY_DIR / "systemd" / "enclave-worker@.service"
HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectControlGroups": "true",
    "RestrictNamespaces": "true",
    "RestrictSUIDSGID": "true",
    "LockPersonality": "true",
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
    "StateDirectory": "enclave",
    "UMask": "0077",
}

units = pytest.mark.parametrize("unit", SYSTEMD_UNITS, ids=lambda p: p.name)


def _service(unit: Path) -> dict[str, str]:
    """The [Service] keys that appear once, as plain strings."""
    return {k: v[0] for k, v in read_unit(unit)["Service"].items() if len(v) == 1}


def test_the_two_units_are_there() -> None:
    assert set(SYSTEMD_UNITS) == {GATEWAY, WORKER}


@units
def test_the_unit_is_hardened(unit: Path) -> None:
    service = _service(unit)
    assert {key: service.get(key) for key in HARDENING} == HARDENING
    assert service["User"] == "enclave"
    assert set(service["RestrictAddressFamilies"].split()) >= {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_gateway_migrates_first_and_is_confined_further() -> None:
    service = _service(GATEWAY)
    assert service["ExecStartPre"] == f"{INSTALLED_ENCLAVE} migrate --wait 60"
    assert service["ExecStart"] == f"{INSTALLED_ENCLAVE} serve"
    assert service["PrivateDevices"] == "true"
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = read_unit(GATEWAY)["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"


def test_the_worker_keeps_its_gpus_and_stays_offline() -> None:
    service = _service(WORKER)
    assert "PrivateDevices" not in service  # /dev/nvidia*
    assert "MemoryDenyWriteExecute" not in service  # Triton and torch compile at run time
    environment = " ".join(read_unit(WORKER)["Service"]["Environment"]).split()
    for variable in ("HF_HUB_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1"):
        assert variable in environment
    assert read_unit(WORKER)["Service"]["EnvironmentFile"][-1] == "-/etc/enclave/worker-%i.env"


def test_each_worker_instance_is_told_to_take_its_own_management_port() -> None:
    assert "ENCLAVE_HTTP__MANAGEMENT_PORT" in WORKER.read_text(encoding="utf-8")
    example = (DEPLOY_DIR / "systemd" / "worker.env.example").read_text(encoding="utf-8")
    settings = dict(line.split("=", 1) for line in example.splitlines() if line and line[0] != "#")
    assert settings["ENCLAVE_HTTP__MANAGEMENT_PORT"] != "9000"  # the gateway's
    assert settings["ENCLAVE_WORKER__MODEL_PATH"].startswith("/")


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on copies that run this venv's enclave; any warning fails."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    enclave = Path(sys.executable).with_name("enclave")
    assert enclave.is_file(), f"no enclave script beside {sys.executable}"
    for unit in SYSTEMD_UNITS:
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_ENCLAVE, str(enclave))
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    names = [GATEWAY.name, WORKER.name.replace("@.", "@smollm2-135m.")]
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
