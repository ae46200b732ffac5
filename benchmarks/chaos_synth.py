"""Chaos run of the laptop synthesis: faults in front of a real teacher, one actor killed, then a healthy rerun.

    python benchmarks/chaos_synth.py [--images 4] [--fault-share 0.3] [--fault-s 60] [--out outputs/chaos]

A loopback OpenAI-compatible teacher server answers with the real hf engine on the tiny Qwen2.5-VL
(grammar-constrained JSON, as a vLLM server would). A chaos proxy in front of it fails
``--fault-share`` of the requests during the first ``--fault-s`` seconds, cycling through HTTP 500,
HTTP 429, a hang past the client timeout and a garbled body. While the first run is busy, one
proposal actor's process is SIGKILLed. The second run goes through the healthy proxy. Printed:
faults injected, rows kept, rows lost (images still not finished after the rerun: must be 0),
duplicate rows (must be 0), model calls the rerun spent and items it redid.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zwz_ray.config import EngineConfig, RayConfig, load_config  # noqa: E402
from zwz_ray.engines import ChatRequest, SamplingParams, build_engine  # noqa: E402
from zwz_ray.runtime import init_ray  # noqa: E402
from zwz_ray.synth.config import SynthConfig  # noqa: E402
from zwz_ray.synth.run import run_synthesis  # noqa: E402
from zwz_ray.synth.store import OutputStore  # noqa: E402

FAULTS = ("http_500", "http_429", "hang", "garbage")


class Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(handler: type, **attrs) -> Server:
    srv = Server(("127.0.0.1", 0), handler)
    for key, value in attrs.items():
        setattr(srv, key, value)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Handler(BaseHTTPRequestHandler):
    def send_json(self, status: int, payload: object, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out first (a hang); nothing to answer
            pass

    def log_message(self, *args):
        pass


def to_request(body: dict) -> ChatRequest:
    """An OpenAI chat-completions body as the engine's request (data-URL images decoded)."""
    messages = []
    for msg in body["messages"]:
        content = msg["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part["type"] == "image_url":
                    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    parts.append({"type": "image", "image": Image.open(io.BytesIO(raw)).convert("RGB")})
                else:
                    parts.append({"type": "text", "text": part["text"]})
            content = parts
        messages.append({"role": msg["role"], "content": content})
    fmt = body.get("response_format") or {}
    schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
    sampling = SamplingParams(n=body.get("n", 1), temperature=body.get("temperature", 0.7), top_p=body.get("top_p", 1.0),
                              max_tokens=body.get("max_tokens", 256), seed=body.get("seed"))
    return ChatRequest(messages=messages, sampling=sampling, json_schema=schema)


class TeacherHandler(Handler):
    """The real teacher: the hf engine behind an OpenAI-compatible route (one request at a time)."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            (result,) = self.server.engine.chat([to_request(body)])
        if result.error:
            return self.send_json(400, {"error": result.error})
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for i, t in enumerate(result.texts)]
        self.send_json(200, {"choices": choices, "usage": {"prompt_tokens": result.prompt_tokens,
                                                           "completion_tokens": result.completion_tokens}})


class ProxyHandler(Handler):
    """Fails a share of requests while the fault period lasts; otherwise forwards to the teacher."""

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        with srv.lock:
            srv.requests += 1
            fault = None
            n = srv.requests  # every request whose share-th slot begins: exactly that share fails
            if srv.faulty and time.time() < srv.fault_until and int(n * srv.share) > int((n - 1) * srv.share):
                fault = next(srv.kinds)
                srv.injected[fault] += 1
        if fault == "http_500":
            return self.send_json(500, {"error": "injected"})
        if fault == "http_429":
            return self.send_json(429, {"error": "injected"})
        if fault == "hang":
            time.sleep(srv.hang_s)
            return self.send_json(504, {"error": "injected hang"})
        if fault == "garbage":
            return self.send_json(200, None, raw=b"\x00<html>upstream garbled</html")
        resp = httpx.post(srv.upstream, content=raw, headers={"Content-Type": "application/json"}, timeout=600)
        self.send_json(resp.status_code, None, raw=resp.content)


def kill_one_actor(name: str, proxy: Server, killed: list) -> None:
    import ray._private.state as state

    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        for actor in state.actors().values():
            if name in actor.get("ActorClassName", "") and actor.get("State") == "ALIVE" and proxy.requests > 2:
                os.kill(actor["Pid"], signal.SIGKILL)
                killed.append(actor["Pid"])
                return
        time.sleep(0.05)


def config(args, base_url: str, images: str) -> SynthConfig:
    laptop = ROOT / "configs" / "synth" / "laptop.yaml"
    teacher = ["backend=openai", "model=teacher", f"base_url={base_url}", f"timeout_s={args.timeout_s}",
               f"max_retries={args.engine_retries}",
               "max_pixels=50176", "resources.batch_size=2", "resources.max_replicas=1"]
    sets = [f"input.paths=[{images}]", "input.generate_demo=false", f"output.dir={args.out}", "output.overwrite=false",
            "output.chunk_size=1", "ray.progress_bars=false", "difficulty.enabled=false", "models.student=null",
            "models.judge=null", "reliability.breaker_error_share=0.9",
            # Less work per image: the real teacher is one CPU process serving every request in turn.
            "proposal.max_objects=2", "questions.n=1", "answers.samples_per_teacher=2", "proposal.max_tokens=96",
            "questions.max_tokens=96", "validation.max_tokens=96", "answers.max_tokens=48", "mcq.max_tokens=96",
            *[f"models.{e}.{s}" for e in ("teacher", "answerers.0", "answerers.1") for s in teacher]]
    return load_config(SynthConfig, str(laptop), sets)


def read(out: Path, folder: str) -> list[dict]:
    return [r for f in sorted((out / folder).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--fault-share", type=float, default=0.4)
    ap.add_argument("--fault-s", type=float, default=60.0)
    ap.add_argument("--timeout-s", type=float, default=60.0, help="client timeout; a hang lasts 2 s longer")
    ap.add_argument("--engine-retries", type=int, default=0,
                    help="the engine's own retries; 0 lets every fault reach the data as a retryable drop")
    ap.add_argument("--out", default=os.path.join(tempfile.mkdtemp(prefix="zwz_chaos_"), "out"))
    args = ap.parse_args(argv)
    from zwz_ray.demo import ensure_demo_images

    images = str(Path(args.out).parent / "images")
    ensure_demo_images(images, n=args.images, seed=0, size=(1280, 1216))
    engine = build_engine(EngineConfig(model="tiny:qwen2_5_vl", device="cpu", min_pixels=3136, max_pixels=50176))
    teacher = serve(TeacherHandler, engine=engine, lock=threading.Lock())
    proxy = serve(ProxyHandler, upstream=f"http://127.0.0.1:{teacher.server_address[1]}/v1/chat/completions",
                  lock=threading.Lock(), requests=0, faulty=True, fault_until=time.time() + 1e9, share=args.fault_share,
                  kinds=itertools.cycle(FAULTS), injected=Counter(), hang_s=args.timeout_s + 2)
    init_ray(RayConfig(num_cpus=4, progress_bars=False, log_to_driver=False))
    cfg = config(args, f"http://127.0.0.1:{proxy.server_address[1]}/v1", images)

    killed: list[int] = []
    proxy.fault_until = time.time() + args.fault_s
    killer = threading.Thread(target=kill_one_actor, args=("Proposal", proxy, killed), daemon=True)
    killer.start()
    start = time.perf_counter()
    try:
        first = run_synthesis(cfg)
        first_note = ""
    except Exception as exc:  # the breaker may open: what finished is committed
        first, first_note = None, f" (stopped: {str(exc)[:160]})"
    first_s = time.perf_counter() - start
    killer.join(timeout=1)

    proxy.faulty = False
    before = proxy.requests
    start = time.perf_counter()
    second = run_synthesis(cfg)
    second_s = time.perf_counter() - start

    out = Path(args.out)
    kept, drops = read(out, "kept"), read(out, "drops")
    store = OutputStore(str(out))
    finished = store.finished_sources(cfg.reliability.max_attempts)
    sources = [s for e in store.entries() for s in e["sources"]]
    keys = [(d["source"], d["object_index"], d["question_index"]) for d in drops]
    stats = second.stats
    report = {
        "faults_injected": dict(proxy.injected), "actors_killed": len(killed),
        "first_run": {"wall_s": round(first_s, 1), "kept_rows": first.kept_rows if first else None,
                      "retryable_drops": first.stats.get("retryable_drops") if first else None, "note": first_note},
        "rows_kept": len(kept),
        # An image not finished after the healthy rerun is data that the faults cost.
        "rows_lost": args.images - len(finished), "retryable_drops_left": stats.get("retryable_drops", 0),
        "duplicate_rows": (len(kept) - len({r["id"] for r in kept})) + (len(keys) - len(set(keys)))
        + (len(sources) - len(set(sources))),
        "rerun": {"wall_s": round(second_s, 1), "model_calls": second.run["model_calls"], "http_requests": proxy.requests - before,
                  "images_redone": second.run["redo"]["images"], "items_redone": second.run["redo"]["rows"]},
        "reconciliation_problems": stats["reconciliation_problems"],
        "output": str(out),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["rows_lost"] == 0 and report["duplicate_rows"] == 0 and not stats["reconciliation_problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
