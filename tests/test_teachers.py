"""Teachers: cache hits and resumption, HTTP retries and errors, template and HF teachers, side info."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gream_lit.alignment.tasks import load_side_info
from gream_lit.curriculum.cot import missing_steps, strip_step4
from gream_lit.curriculum.teachers import (
    CachedTeacher,
    HFTeacher,
    OpenAITeacher,
    Teacher,
    TeacherError,
    TemplateTeacher,
    build_teacher,
    build_user_side_info,
)
from gream_lit.curriculum.teachers.openai_compat import redact
from gream_lit.curriculum.teachers.prompts import COT_STEP_HEADERS, cot_messages, parse_item_blocks
from gream_lit.data.catalog import Catalog
from gream_lit.modeling.tiny import tiny_causal_lm


def tiny_catalog() -> Catalog:
    cats = ["Lab,Fasteners,Staples", "Lab,Fasteners,Screws", "Lab,Printing,Filament", "Lab,Printing,Nozzles"]
    items = [
        {"title": f"{w} model {i}", "brand": b, "categories": cats[i % 4], "description": f"about {w}"}
        for i, (w, b) in enumerate(
            [
                ("steel staple", "Acme"),
                ("wood screw", "Acme"),
                ("pla filament", "Hatch"),
                ("brass nozzle", "Hatch"),
                ("narrow staple", "Bolt"),
                ("deck screw", "Bolt"),
                ("petg filament", "Hatch"),
                ("steel nozzle", "Acme"),
            ]
        )
    ]
    seqs = [[0, 1, 4, 5, 2, 3, 6, 7], [2, 3, 6, 7, 0, 1], [1, 5, 0]]
    return Catalog("tiny", seqs, items, [str(i) for i in range(8)], ["u0", "u1", "u2"])


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class CountingTeacher(Teacher):
    def __init__(self) -> None:
        self.calls = 0

    @property
    def teacher_id(self) -> str:
        return "counting"

    def complete(self, messages):
        self.calls += 1
        return messages[-1]["content"].upper()


def test_cache_hit_on_rerun(tmp_path):
    path = tmp_path / "cache.jsonl"
    inner = CountingTeacher()
    batch = [msgs("a"), msgs("b"), msgs("a")]
    assert CachedTeacher(inner, path).complete_many(batch) == ["A", "B", "A"]
    assert inner.calls == 3
    again = CachedTeacher(inner, path)
    assert again.complete_many(batch) == ["A", "B", "A"] and inner.calls == 3 and again.hits == 3
    assert len(path.read_text().splitlines()) == 3


def test_cache_skips_truncated_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "cache.jsonl"
    inner = CountingTeacher()
    CachedTeacher(inner, path).complete_many([msgs("a")])
    with path.open("a") as f:
        f.write('{"key": "dead", "respo')  # killed mid-write
    resumed = CachedTeacher(inner, path)
    assert len(resumed) == 1
    assert resumed.complete_many([msgs("a"), msgs("c")]) == ["A", "C"] and inner.calls == 2
    assert len(CachedTeacher(inner, path)) == 2


def test_cache_rejects_corrupt_middle_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('garbage\n{"key": "k", "response": "r"}\n')
    with pytest.raises(ValueError, match="line 1 is not a cache record"):
        CachedTeacher(CountingTeacher(), path)


class FlakyAPI(BaseHTTPRequestHandler):
    """Answers by the user text: 'slow' times out once, 'err500' fails twice, 'garbled' sends bad JSON
    once, 'down' always fails with 503, 'bad' is a 400; anything else is echoed."""

    seen: dict[str, int] = {}
    auth: list[str | None] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        n = FlakyAPI.seen[text] = FlakyAPI.seen.get(text, 0) + 1
        FlakyAPI.auth.append(self.headers.get("Authorization"))
        if text == "slow" and n == 1:
            time.sleep(0.6)
        if (text == "err500" and n <= 2) or text == "down":
            return self._send(500 if text == "err500" else 503, b'{"error": "busy"}')
        if text == "bad":
            return self._send(400, b'{"error": "bad request"}')
        if text == "echo_auth":  # a proxy that echoes the request's headers into its error page
            page = {"error": "unauthorized", "headers": dict(self.headers), "padding": "x" * 3000}
            return self._send(401, json.dumps(page).encode())
        if text == "garbled" and n == 1:
            return self._send(200, b'{"choices": [')
        self._send(200, json.dumps({"choices": [{"message": {"content": f"echo {text}"}}]}).encode())

    def _send(self, code, payload):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def api():
    FlakyAPI.seen, FlakyAPI.auth = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyAPI)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def client(url, **kw):
    return OpenAITeacher("m", base_url=url, api_key_env=None, timeout_s=0.3, max_retries=2, backoff_s=0.01, **kw)


def test_openai_retries_timeout_500_and_malformed_json(api):
    out = client(api, max_workers=4).complete_many([msgs("ok"), msgs("slow"), msgs("err500"), msgs("garbled")])
    assert out == ["echo ok", "echo slow", "echo err500", "echo garbled"]
    assert FlakyAPI.seen == {"ok": 1, "slow": 2, "err500": 3, "garbled": 2}


def test_openai_failure_names_request_and_keeps_finished_samples(api, tmp_path):
    cache = tmp_path / "answers.jsonl"
    teacher = CachedTeacher(client(api), cache)
    expected = r"1 of 3 requests failed \(2 answered and kept\).*'down'.*3 attempts: HTTP 503"
    with pytest.raises(TeacherError, match=expected):
        teacher.complete_many([msgs("ok"), msgs("down"), msgs("err500")])
    assert len(cache.read_text().splitlines()) == 2
    FlakyAPI.seen.clear()
    resumed = CachedTeacher(client(api), cache)
    assert resumed.complete_many([msgs("ok"), msgs("err500")]) == ["echo ok", "echo err500"]
    assert FlakyAPI.seen == {}


def test_openai_client_errors_are_not_retried_and_key_comes_from_env(api, monkeypatch):
    with pytest.raises(TeacherError, match="HTTP 400"):
        client(api).complete(msgs("bad"))
    assert FlakyAPI.seen["bad"] == 1
    keyed = OpenAITeacher("m", base_url=api, api_key_env="GREAM_TEST_KEY", max_retries=0)
    with pytest.raises(TeacherError, match="GREAM_TEST_KEY"):
        keyed.complete(msgs("ok"))
    monkeypatch.setenv("GREAM_TEST_KEY", "sekrit")
    assert keyed.complete(msgs("ok")) == "echo ok" and FlakyAPI.auth[-1] == "Bearer sekrit"


def test_a_server_echoing_the_key_in_its_error_gets_it_redacted_and_cut(api, monkeypatch):
    monkeypatch.setenv("GREAM_TEST_KEY", "sk-sekrit-123")
    keyed = OpenAITeacher("m", base_url=api, api_key_env="GREAM_TEST_KEY", max_retries=0)
    with pytest.raises(TeacherError, match="HTTP 401") as err:
        keyed.complete(msgs("echo_auth"))
    text = str(err.value)
    assert "sk-sek" not in text and "unauthorized" in text  # redacted before it is cut
    assert "more characters" in text and len(text) < 1000
    assert redact("token=abc api_key: sk-1 Bearer xyz", ["abc"]) == "token=*** api_key: *** Bearer ***"


def test_a_server_that_never_answers_is_reported_in_seconds():
    """A listening socket that never responds: two short tries, then a clear error (not retries for hours)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1"
        teacher = OpenAITeacher("m", base_url=url, api_key_env=None, max_retries=5, backoff_s=0.01, first_contact_s=0.4)
        start = time.monotonic()
        with pytest.raises(TeacherError, match=r"has not answered any request \(timeout after 0\.2s, 2 tries\)"):
            teacher.complete_many([msgs("a"), msgs("b")])
        assert time.monotonic() - start < 5


def test_template_teacher_cot_hides_target_title():
    cat = tiny_catalog()
    teacher = TemplateTeacher.from_catalog(cat, max_df=0.6)
    req = cot_messages([cat.items[i] for i in (0, 1, 4)], cat.items[5])
    assert [label for label, _ in parse_item_blocks(req[1]["content"])] == ["Item 1", "Item 2", "Item 3", "Next item"]
    text = teacher.complete(req)
    steps = text.split("Step 4")[0]
    assert all(f"Step {k}:" in text for k in (1, 2, 3, 4))
    assert "deck screw model 5" not in steps and "Screws (Fasteners)" in steps
    # the latest purchase by category and brand, not by a title the ID-only student would have to invent
    assert "The latest purchase is Staples (Fasteners) from Bolt." in steps and "narrow staple model 4" not in steps
    assert teacher.complete(req) == text
    with pytest.raises(TeacherError, match="only answers gream_lit's own prompts"):
        teacher.complete([{"role": "system", "content": "be nice"}, *msgs("hi")])


def test_side_info_layout_and_alignment_loader(tmp_path):
    cat = tiny_catalog()
    out = tmp_path / "tiny.user.json"
    info = build_user_side_info(cat, build_teacher("template", cat, max_df=0.6), out=out)
    assert set(info["user_explicit_preference"]) == {"u0", "u1"}  # u2 has 3 items: nothing before seq[-3]
    rec = info["user_vague_intention"]["train"]["u0"]
    assert rec["item"] == 3 and rec["inters"] == [0, 1, 4, 5, 2] and len(rec["querys"]) == 2
    long_term = info["user_explicit_preference"]["u0"][1]  # the text after "Long-term preferences:"
    assert long_term.startswith("Staples and Screws, with")
    loaded = load_side_info(out, cat)
    assert len(loaded[0].preferences) == 3 and len(loaded[1].queries) == 2


def tiny_chat_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"] + [f"w{i}" for i in range(40)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        chat_template="{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )


def test_hf_teacher_batches_in_order_and_is_deterministic():
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    teacher = HFTeacher("tiny", model=model, tokenizer=tok, max_new_tokens=4, batch_size=2)
    batch = [msgs("w1 w2 w3"), msgs("w4"), msgs("w5 w6")]
    seen = []
    out = teacher.complete_many(batch, on_result=lambda i, t: seen.append(i))
    assert seen == [0, 1, 2] and len(out) == 3 and all(isinstance(t, str) and t for t in out)
    assert teacher.complete_many(batch) == out
    assert teacher.teacher_id == "hf:tiny:greedy:max4"


def test_hf_teacher_guided_steps_write_every_header_in_order():
    from gream_lit.modeling.tiny import tiny_chat_tokenizer as byte_level_chat_tokenizer  # HF stop strings need it

    tok = byte_level_chat_tokenizer()
    model = tiny_causal_lm(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    teacher = HFTeacher("tiny", model=model, tokenizer=tok, max_new_tokens=24, batch_size=2, guided_steps=True)
    out = teacher.complete_many([msgs("w1 w2 w3"), msgs("w4"), msgs("w5 w6")])
    for text in out:  # a random model writes junk, but the layout is fixed: one line per step
        lines = text.split("\n")
        assert [line[: len(h)] for line, h in zip(lines, COT_STEP_HEADERS)] == list(COT_STEP_HEADERS)
        assert len(lines) == 4 and strip_step4(text) is not None and not missing_steps(strip_step4(text))
    assert all(len(line) > len(h) for line, h in zip(text.split("\n"), COT_STEP_HEADERS) for text in out)  # never empty
    assert teacher.teacher_id == "hf:tiny:greedy:max24:guided4"  # a cache never mixes guided and free answers
    assert teacher.step_generation.max_new_tokens == 6


def test_build_teacher_from_config(tmp_path):
    cat = tiny_catalog()
    cached = build_teacher("template", cat, cache=tmp_path / "c.jsonl", max_df=0.6)
    assert isinstance(cached, CachedTeacher) and cached.teacher_id.startswith("template:")
    with pytest.raises(ValueError, match="unknown teacher kind 'gpt'"):
        build_teacher("gpt", cat)
    with pytest.raises(ValueError, match="needs the catalog"):
        build_teacher("template")
