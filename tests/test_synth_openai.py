"""A teacher behind an OpenAI-compatible endpoint that fails: every failure is a recorded drop.

A real HTTP server on the loopback interface answers 500, hangs past the client timeout,
or returns empty / unparseable completions; the real ``openai`` engine talks to it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from synth_rows import new_row

from zwz_ray.config import EngineConfig
from zwz_ray.demo import render_scene
from zwz_ray.images import encode_image
from zwz_ray.synth.columns import to_table
from zwz_ray.synth.config import AnswersConfig, InputConfig, ProposalConfig
from zwz_ray.synth.stages import Answers, Proposal


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.hits.append(self.path)
        mode = self.path.strip("/").split("/")[0]
        if mode == "fail500":
            return self._send(500, {"error": "internal"})
        if mode == "hang":
            time.sleep(3)
            return self._send(200, {})
        content = {"empty": "", "garbage": "I cannot comply."}[mode]
        choices = [{"index": i, "message": {"content": content}, "finish_reason": "stop"} for i in range(body.get("n", 1))]
        return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": 2}})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("openai") / "scene.png"
    path.write_bytes(encode_image(render_scene(0, 1, (1300, 1250))[0], "PNG"))
    return str(path)


def endpoint(server, mode, retries=1) -> EngineConfig:
    port = server.server_address[1]
    return EngineConfig(backend="openai", model="teacher", base_url=f"http://127.0.0.1:{port}/{mode}/v1",
                        timeout_s=1.0, max_retries=retries, max_pixels=64 * 64)


def image_row(source):
    return {**new_row(source), "image_width": 1300, "image_height": 1250}


@pytest.mark.parametrize("mode,reason,detail", [
    ("fail500", "engine_error", "http_500"),
    ("hang", "engine_error", "timeout"),
    ("empty", "unparseable_output", "empty reply"),
    ("garbage", "unparseable_output", "no JSON"),
])
def test_proposal_against_a_failing_endpoint(server, scene, mode, reason, detail):
    stage = Proposal(endpoint(server, mode), ProposalConfig(), InputConfig())
    start = time.perf_counter()
    (row,) = stage(to_table([image_row(scene)])).to_pylist()
    assert (row["drop_stage"], row["drop_reason"]) == ("proposal", reason)
    assert detail in row["drop_detail"]
    assert time.perf_counter() - start < 15
    usage = json.loads(row["usage"])["proposal"]["models"]["teacher"]
    assert usage["calls"] == 1 and usage["errors"] == (1 if reason == "engine_error" else 0)


def test_retries_happen_before_the_drop(server, scene):
    before = sum(1 for p in server.hits if p.startswith("/fail500/"))
    stage = Proposal(endpoint(server, "fail500", retries=2), ProposalConfig(), InputConfig())
    stage.engine.backoff_base_s = 0.01
    (row,) = stage(to_table([image_row(scene)])).to_pylist()
    assert row["drop_reason"] == "engine_error"
    assert sum(1 for p in server.hits if p.startswith("/fail500/")) - before == 3


def test_answerer_failure_drops_the_question(server, scene):
    stage = Answers(endpoint(server, "fail500", retries=0), AnswersConfig())
    row = {**image_row(scene), "object_index": 0, "question_index": 0, "question": "What colour?",
           "crop": encode_image(render_scene(0, 1, (200, 200))[0], "PNG")}
    (out,) = stage(to_table([row])).to_pylist()
    assert (out["drop_stage"], out["drop_reason"], out["drop_detail"]) == ("answers", "engine_error", "http_500")
