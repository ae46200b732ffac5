"""The OpenAI-compatible engine against real HTTP servers on 127.0.0.1.

Failure paths use a small stdlib server that answers 429 / 500 / 400 / hangs as scripted;
the happy path (marked ``vllm``) talks to a real ``vllm serve`` of a tiny model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
from PIL import Image

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, Grammar, SamplingParams, build_engine, parse_json, user_message

KEY = "sk-test-SECRET-0123456789"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 12}, "count": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["answer", "count"],
}


def _ok_body(n: int) -> dict:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": f'{{"answer": "red", "count": {i}}}'}, "finish_reason": "stop"}
        for i in range(n)
    ]
    return {"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n}}


class _Scripted(BaseHTTPRequestHandler):
    """/<scenario>/v1/chat/completions; each scenario counts its calls in ``server.calls``."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        scenario = self.path.strip("/").split("/")[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.calls[scenario] = srv.calls.get(scenario, 0) + 1
            srv.times.setdefault(scenario, []).append(time.monotonic())
            srv.auth.append(self.headers.get("Authorization"))
            srv.bodies.append(body)
            count = srv.calls[scenario]
        if scenario == "slow":
            with srv.lock:
                srv.in_flight += 1
                srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            time.sleep(0.2)
            with srv.lock:
                srv.in_flight -= 1
            return self._send(200, _ok_body(1))
        if scenario == "ok" or (scenario == "r429" and count > 1):
            return self._send(200, _ok_body(body.get("n", 1)))
        if scenario == "r429":
            return self._send(429, {"error": "slow down"}, {"Retry-After": "1"})
        if scenario == "r500":
            return self._send(500, {"error": "boom"})
        if scenario == "r400":
            return self._send(400, {"error": f"bad request, you sent {self.headers.get('Authorization')}"})
        if scenario == "hang":
            time.sleep(2.5)
            return self._send(200, _ok_body(1))
        self._send(404, {"error": "unknown"})

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    srv.daemon_threads = True
    srv.lock, srv.calls, srv.times, srv.auth, srv.bodies = threading.Lock(), {}, {}, [], []
    srv.in_flight = srv.max_in_flight = 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


def _engine(server, scenario: str, **overrides):
    cfg = dict(backend="openai", model="m", base_url=f"http://127.0.0.1:{server.server_port}/{scenario}/v1", timeout_s=1.0, max_retries=2)
    cfg.update(overrides)
    engine = build_engine(EngineConfig(**cfg))
    engine.backoff_base_s = 0.05
    return engine


def _request(n: int = 1, image: bool = False) -> ChatRequest:
    images = [Image.new("RGB", (8, 8), (255, 0, 0))] if image else []
    return ChatRequest([user_message("What colour?", images)], SamplingParams(n=n, max_tokens=20), json_schema=SCHEMA, request_id="q1")


@pytest.fixture
def secret(monkeypatch, caplog):
    monkeypatch.setenv("ZWZ_TEST_KEY", KEY)
    logger = logging.getLogger("zwz_ray")
    logger.addHandler(caplog.handler)  # the zwz_ray logger does not propagate to the root
    caplog.set_level(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)


def _assert_no_key(engine, results, caplog):
    seen = [repr(engine), str(engine.stats.as_dict()), caplog.text] + [repr(r) for r in results]
    assert not any(KEY in text for text in seen)


def test_success_sends_key_images_schema_and_n(server, secret):
    engine = _engine(server, "ok", api_key_env="ZWZ_TEST_KEY")
    res = engine.chat([_request(n=3, image=True)])[0]
    assert res.ok and len(res.texts) == 3 and res.prompt_tokens == 11 and res.completion_tokens == 21
    assert parse_json(res.texts[2], SCHEMA)[0] == {"answer": "red", "count": 2}
    body = server.bodies[-1]
    assert server.auth[-1] == f"Bearer {KEY}"
    assert body["n"] == 3 and body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    _assert_no_key(engine, [res], secret)
    engine.close()


def test_new_sampling_fields_and_grammars_in_the_body(server):
    engine = _engine(server, "ok")
    sampling = SamplingParams(max_tokens=8, top_k=20, presence_penalty=1.5, repetition_penalty=1.05)
    engine.chat([ChatRequest([user_message("Is it red?")], sampling, grammar=Grammar.regex("(yes|no)"))])
    body = server.bodies[-1]
    assert (body["top_k"], body["presence_penalty"], body["repetition_penalty"]) == (20, 1.5, 1.05)
    assert body["structured_outputs"] == {"regex": "(yes|no)"} and "response_format" not in body
    engine.chat([ChatRequest([user_message("Box it.")], SamplingParams(max_tokens=8), grammar=Grammar.ebnf('root ::= "ok"'))])
    body = server.bodies[-1]
    assert body["structured_outputs"] == {"grammar": 'root ::= "ok"'}
    assert not {"top_k", "presence_penalty", "repetition_penalty"} & set(body)  # defaults: the plain OpenAI body
    engine.chat([ChatRequest([user_message("Is it red?")], SamplingParams(max_tokens=8, top_k=-1))])
    assert "top_k" not in server.bodies[-1] and "structured_outputs" not in server.bodies[-1]
    engine.close()


def test_missing_key_variable_sends_no_auth(server, monkeypatch):
    monkeypatch.delenv("ZWZ_NO_SUCH_KEY", raising=False)
    engine = _engine(server, "ok", api_key_env="ZWZ_NO_SUCH_KEY")
    assert engine.chat([_request()])[0].ok
    assert server.auth[-1] is None
    engine.close()


def test_429_honours_retry_after_then_succeeds(server, secret):
    engine = _engine(server, "r429", api_key_env="ZWZ_TEST_KEY")
    res = engine.chat([_request()])[0]
    assert res.ok and server.calls["r429"] == 2 and engine.retries == 1
    gap = server.times["r429"][1] - server.times["r429"][0]
    assert 0.9 <= gap < 3.0  # Retry-After: 1, not the 0.05 s backoff
    assert "http_429" in secret.text
    _assert_no_key(engine, [res], secret)
    engine.close()


def test_500_retries_with_backoff_until_exhausted(server, secret):
    engine = _engine(server, "r500", api_key_env="ZWZ_TEST_KEY", max_retries=3)
    res = engine.chat([_request()])[0]
    assert res.error == "http_500" and server.calls["r500"] == 4 and engine.retries == 3
    gaps = [b - a for a, b in zip(server.times["r500"], server.times["r500"][1:])]
    for attempt, gap in enumerate(gaps):  # equal jitter: between half and all of base * 2**attempt
        assert 0.05 * 2**attempt * 0.5 * 0.9 <= gap <= 0.05 * 2**attempt + 0.5
    assert engine.stats.errors == 1
    _assert_no_key(engine, [res], secret)
    engine.close()


def test_400_is_not_retried_and_key_is_redacted(server, secret):
    engine = _engine(server, "r400", api_key_env="ZWZ_TEST_KEY")
    res = engine.chat([_request()])[0]
    assert res.error.startswith("http_400") and server.calls["r400"] == 1 and "***" in res.error
    _assert_no_key(engine, [res], secret)
    engine.close()


def test_hanging_endpoint_times_out(server, secret):
    engine = _engine(server, "hang", api_key_env="ZWZ_TEST_KEY", max_retries=1)
    start = time.monotonic()
    res = engine.chat([_request()])[0]
    assert res.error == "timeout" and server.calls["hang"] == 2
    assert time.monotonic() - start < 4.5
    _assert_no_key(engine, [res], secret)
    engine.close()


def test_connection_refused_is_an_error_result(secret):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = build_engine(EngineConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1))
    engine.backoff_base_s = 0.01
    assert engine.chat([_request()])[0].error.startswith("connection_error")
    engine.close()


def test_works_inside_a_running_event_loop_and_bounds_concurrency(server):
    engine = _engine(server, "slow", max_concurrency=2)

    async def main():
        return engine.chat([_request() for _ in range(6)])

    results = asyncio.run(main())
    assert all(r.ok for r in results) and len(results) == 6
    assert server.max_in_flight == 2
    engine.close()


# --------------------------------------------------------------------------- a real vLLM server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"vllm server not healthy after {timeout}s")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    from zwz_ray.models import resolve_model

    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_model("tiny:text"),
        "--served-model-name",
        "tiny-text",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "1024",
        "--enforce-eager",
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=240)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_server_n_samples_and_schema(vllm_server):
    engine = build_engine(EngineConfig(backend="openai", model="tiny:text", served_model="tiny-text", base_url=vllm_server))
    reqs = [
        ChatRequest([user_message(f"Describe item {i}.")], SamplingParams(n=3, temperature=1.0, max_tokens=64, seed=i), json_schema=SCHEMA)
        for i in range(3)
    ]
    for res in engine.chat(reqs):
        assert res.ok, res.error
        assert len(res.texts) == 3 and res.prompt_tokens > 0 and res.completion_tokens > 0
        for text in res.texts:
            value, error = parse_json(text, SCHEMA)
            assert error is None, (text, error)
            jsonschema.validate(value, SCHEMA)
    # grammars and the extra sampling fields go through vLLM's structured outputs and sampler
    sampling = SamplingParams(n=2, temperature=1.0, max_tokens=64, seed=1, top_k=20, presence_penalty=1.5, repetition_penalty=1.1)
    regex, ebnf = engine.chat([
        ChatRequest([user_message("Is the cup red?")], sampling, grammar=Grammar.regex("(yes|no)")),
        ChatRequest([user_message("Which colour?")], sampling, grammar=Grammar.ebnf('root ::= [a-z ]{0,16} "\\\\boxed{" [a-z]{1,8} "}"')),
    ])
    assert regex.ok and set(regex.texts) <= {"yes", "no"}, regex.error or regex.texts
    assert ebnf.ok and all(re.fullmatch(r"[a-z ]{0,16}\\boxed\{[a-z]{1,8}\}", t) for t in ebnf.texts), ebnf.error or ebnf.texts
    engine.close()
