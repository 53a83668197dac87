"""The OpenAI-compatible teacher against a real server: ``transformers serve`` (the ``transformers[serving]``
extra) serves SmolLM2-135M-Instruct on loopback, and ``teacher cot`` writes chain-of-thought answers through
the normal on-disk cache. Skipped, with the reason, where the extra, the model or the server is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gream_lit.curriculum.cli import main as teacher_main
from gream_lit.modeling.backbone import resolve

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_smollm2(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base_url, model) of a ``transformers serve`` process on a free loopback port."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers serve needs the transformers[serving] extra ({', '.join(missing)} not installed)")
    cli = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    if not Path(cli).exists():
        pytest.skip("no `transformers` command on PATH")
    try:
        model = resolve("smollm2-135m-instruct")
    except Exception as err:  # the GGUF package or its conversion is unavailable here
        pytest.skip(f"SmolLM2 is not available locally: {err}")
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [cli, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"transformers serve did not start: {(tmp_path / 'serve.log').read_text()[-500:]}")
            time.sleep(1)
        yield f"{base}/v1", model
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_served_teacher_writes_cot_answers_through_the_cache(served_smollm2, scientific_dir: Path, tmp_path: Path):
    base_url, model = served_smollm2
    cache, out = tmp_path / "answers.jsonl", tmp_path / "cot.jsonl"
    args = [
        "cot",
        "--data",
        str(scientific_dir),
        "--index",
        str(scientific_dir / "indexes" / "rkmeans_zcr" / "Scientific.index.json"),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--users",
        "2",
        "--teacher",
        "openai",
        "--teacher_arg",
        f"model={model}",
        "--teacher_arg",
        f"base_url={base_url}",
        "--teacher_arg",
        "api_key_env=null",
        "--teacher_arg",
        "max_tokens=48",
        "--teacher_arg",
        "max_workers=2",
        "--teacher_arg",
        "timeout_s=60",
    ]
    assert teacher_main(args) == 0
    answers = [json.loads(line) for line in cache.read_text().splitlines()]
    assert answers and all(a["response"].strip() for a in answers)  # real completions, one per CoT request
    assert all(a["teacher"].startswith(f"openai:{model}@{base_url}") for a in answers)
    mtime = cache.stat().st_mtime
    assert teacher_main(args) == 0  # a rerun is served from the cache: no request, no new line
    assert cache.stat().st_mtime == mtime and len(cache.read_text().splitlines()) == len(answers)
