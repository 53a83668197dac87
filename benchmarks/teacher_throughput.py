"""Chain-of-thought requests per minute: SmolLM2 served by ``transformers serve`` (the OpenAI-compatible
teacher, as users point it at vLLM, sglang or llama.cpp) against the in-process HF teacher, on the same
Scientific users, the same answer length and fresh caches.

    python benchmarks/teacher_throughput.py --users 4 --max_tokens 128 --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gream_lit.curriculum.cli import main as teacher_main  # noqa: E402
from gream_lit.modeling.backbone import resolve  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon18_scientific"


def _requests(cache: Path) -> int:
    return len(cache.read_text().splitlines()) if cache.exists() else 0


def run_cot(out: Path, users: int, teacher: str, args: list[str]) -> tuple[int, float]:
    """(requests answered, seconds) of one ``teacher cot`` run into a fresh cache."""
    cache = out.with_suffix(".cache.jsonl")
    argv = ["cot", "--data", str(DATA), "--index", str(DATA / "indexes/rkmeans_zcr/Scientific.index.json")]
    argv += ["--out", str(out), "--cache", str(cache), "--users", str(users), "--teacher", teacher]
    for pair in args:
        argv += ["--teacher_arg", pair]
    t0 = time.perf_counter()
    teacher_main(argv)
    return _requests(cache), time.perf_counter() - t0


def serve(model: str, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = shutil.which("transformers") or "transformers"
    proc = subprocess.Popen(
        [cli, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return proc, f"{base}/v1"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"transformers serve did not start; see {log}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--workers", type=int, default=4, help="concurrent requests to the server")
    p.add_argument("--batch_size", type=int, default=4, help="the in-process teacher's generation batch")
    args = p.parse_args()
    model = resolve("smollm2-135m-instruct")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, base_url = serve(model, tmp / "serve.log")
        try:
            served = [f"model={model}", f"base_url={base_url}", "api_key_env=null", f"max_tokens={args.max_tokens}"]
            rows[f"served (transformers serve, {args.workers} concurrent)"] = run_cot(
                tmp / "served.jsonl", args.users, "openai", [*served, f"max_workers={args.workers}", "timeout_s=600"]
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        hf = [f"name_or_path={model}", f"max_new_tokens={args.max_tokens}", f"batch_size={args.batch_size}"]
        rows[f"in-process HF (batches of {args.batch_size})"] = run_cot(tmp / "hf.jsonl", args.users, "hf", hf)
    print(f"\n{args.users} Scientific users, answers of at most {args.max_tokens} tokens, torch threads: default")
    print("| teacher | requests | seconds | requests/min |\n|---|---:|---:|---:|")
    for name, (n, secs) in rows.items():
        print(f"| {name} | {n} | {secs:.1f} | {60 * n / secs:.1f} |")
    print(json.dumps({k: {"requests": n, "seconds": round(s, 1)} for k, (n, s) in rows.items()}))


if __name__ == "__main__":
    main()
