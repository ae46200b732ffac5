"""Faults never turn into lost data.

Synthesis runs on real Ray against a loopback OpenAI-compatible teacher that can be switched
between down (HTTP 500), slow and answering (a reply the proposal stage rejects, a data-decided
drop). Storage faults use a real fsspec filesystem that refuses a write; train checkpoints and
model loaders are checked for safe loading.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from zwz_ray.config import load_config
from zwz_ray.demo import render_scene
from zwz_ray.images import encode_image
from zwz_ray.synth.accounting import reconcile
from zwz_ray.synth.columns import drop, retryable
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.run import ChunkWriter, finish_stats, run_synthesis
from zwz_ray.synth.stages.base import CircuitOpenError
from zwz_ray.synth.store import OutputStore

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "ZWZ_RELIABILITY_TEST_KEY"
FAKE_KEY = "sk-zwz-fake-7d1c0ffee5ecret"
# Ray workers inherit the environment of the process that starts Ray: set the key at import
# (collection happens before the session's Ray fixture starts Ray).
os.environ.setdefault(KEY_ENV, FAKE_KEY)


class Teacher(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.hits += 1
        srv.auth.add(self.headers.get("Authorization", ""))
        if srv.mode == "down":
            return self._send(500, {"error": "overloaded"})
        if srv.mode == "slow":
            time.sleep(0.7)
        choices = [{"index": 0, "message": {"content": "{}"}, "finish_reason": "stop"}]
        return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 1}})

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
def teacher():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Teacher)
    srv.daemon_threads, srv.hits, srv.auth, srv.mode = True, 0, set(), "up"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability_images")
    for i in range(4):
        (folder / f"scene{i}.png").write_bytes(encode_image(render_scene(0, i, (1216, 1216))[0], "PNG"))
    return folder


def config(teacher, images: Path, out: Path, *extra: str) -> SynthConfig:
    engine = {"backend": "openai", "model": "teacher", "base_url": f"http://127.0.0.1:{teacher.server_address[1]}/v1",
              "api_key_env": KEY_ENV, "max_retries": 0, "timeout_s": 5.0, "max_pixels": 64 * 64,
              "resources": {"num_cpus": 0.25, "batch_size": 1, "max_replicas": 1}}
    data = {"input": {"paths": [str(images)]}, "output": {"dir": str(out), "chunk_size": 2},
            "models": {"teacher": engine, "answerers": [engine], "judge": None, "student": None,
                       "grounding": {"backend": "vlm"}},
            "difficulty": {"enabled": False}, "cpu": {"batch_size": 1, "num_cpus": 0.25},
            "ray": {"progress_bars": False}}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(data))
    return load_config(SynthConfig, str(path), list(extra))


def drops(out: Path) -> list[dict]:
    return [r for f in sorted((out / "drops").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


# --------------------------------------------------------------------------- classification (no Ray)


@pytest.mark.parametrize("reason,detail,expected", [
    ("engine_error", "http_500", True), ("engine_error", "http_429", True), ("engine_error", "timeout", True),
    ("engine_error", "connection_error: ConnectError", True), ("engine_error", "bad_response: JSONDecodeError", True),
    ("engine_error", "generate_failed: RuntimeError: out of memory", True), ("stage_error", "ValueError", True),
    ("engine_error", "bad_request: UnidentifiedImageError", False), ("engine_error", "http_400: too long", False),
    ("engine_error", "prompt_too_long: 9000 tokens", False), ("unparseable_output", "", False),
    ("no_consensus", "", False), ("source_unreadable", "", False), ("too_easy", "", False),
])
def test_infrastructure_drops_are_retryable_data_drops_are_final(reason, detail, expected):
    assert retryable(reason, detail) is expected
    assert drop({}, "s", reason, detail)["drop_retryable"] is expected


# --------------------------------------------------------------------------- one Ray scenario


def kill_actor_when_busy(teacher, name: str, killed: list[int]) -> threading.Thread:
    """SIGKILL the process of this test's Ray session's ``name`` actor once the teacher has seen its first request."""
    import ray._private.state as state

    start_hits = teacher.hits

    def kill():
        deadline = time.time() + 120
        while time.time() < deadline:
            for actor in state.actors().values():
                if name in actor.get("ActorClassName", "") and actor.get("State") == "ALIVE" and teacher.hits > start_hits:
                    os.kill(actor["Pid"], signal.SIGKILL)
                    killed.append(actor["Pid"])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def outage(ray_session, teacher, images, tmp_path_factory):
    """Down for two runs (the breaker off), then healthy but slow while the proposal actor is killed, then idle."""
    import ray._private.state as state

    out = tmp_path_factory.mktemp("outage") / "out"
    runs, killed = [], []
    plan = [("down", []), ("down", ["reliability.max_attempts=1"]), ("down", []), ("slow", []), ("cut", []), ("up", [])]
    for mode, extra in plan:
        if mode == "cut":
            cut = interrupt_last_commit(OutputStore(str(out)))
            mode = "up"
        teacher.mode = mode
        before = teacher.hits
        killer = kill_actor_when_busy(teacher, "Proposal", killed) if mode == "slow" else None
        try:
            result = run_synthesis(config(teacher, images, out, "reliability.breaker_error_share=1.0", *extra))
        finally:
            teacher.mode = "up"
            if killer is not None:
                killer.join()
        store = OutputStore(str(out))
        runs.append({"result": result, "hits": teacher.hits - before, "drops": drops(out), "manifest": store.entries(),
                     "finished": store.finished_sources(max_attempts=3)})
    restarts = [a.get("NumRestarts", 0) for a in state.actors().values() if "Proposal" in a.get("ActorClassName", "")]
    return {"out": out, "runs": runs, "killed": killed, "restarts": restarts, "cut": cut}


def interrupt_last_commit(store: OutputStore) -> dict:
    """Leave the state a kill inside the last chunk's commit leaves: its kept and drops files are in place,
    its manifest line is not (the kept file here holds rows for its images, as a chunk with kept rows would)."""
    from zwz_ray.synth.columns import output_table, to_table

    *entries, last = store.entries()
    rows = [r for s in last["sources"] for r in question_rows(s, failed=False)]
    with store.fs.open(store.path("kept", f"{last['chunk']}.parquet"), "wb") as fh:
        pq.write_table(output_table(to_table(rows)), fh)
    store.write_text("manifest.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    return {"chunk": last["chunk"], "sources": last["sources"]}


def test_an_outage_leaves_images_unfinished_and_retryable(outage):
    first = outage["runs"][0]
    assert first["hits"] == 4 and len(first["drops"]) == 4
    assert all(d["retryable"] and d["attempt"] == 1 and d["reason"] == "engine_error" for d in first["drops"])
    assert first["finished"] == set()
    assert first["result"].stats["retryable_drops"] == 4
    assert first["result"].stats["retries"]["images_pending"] == 4


def test_retryable_drops_become_final_after_max_attempts(outage):
    capped = outage["runs"][1]  # max_attempts=1: the single failed attempt was the last
    assert capped["hits"] == 0 and capped["result"].run["images"] == 0
    assert capped["result"].stats["retries"]["images_final_after_max_attempts"] == 4


def test_the_rerun_redoes_each_image_once_and_replaces_its_rows(outage):
    second, healed = outage["runs"][2], outage["runs"][3]
    assert second["hits"] == 4 and {d["attempt"] for d in second["drops"]} == {2} and len(second["drops"]) == 4
    rows = healed["drops"]
    assert sorted(d["source"] for d in rows) == sorted({d["source"] for d in rows}) and len(rows) == 4
    assert {(d["reason"], d["retryable"], d["attempt"]) for d in rows} == {("unparseable_output", False, 3)}
    assert len(healed["finished"]) == 4
    stats = healed["result"].stats
    assert stats["reconciliation_problems"] == [] and reconcile(stats) == []
    assert stats["images"]["in"] == 4 and stats["drop_rows"] == 4 and stats["retryable_drops"] == 0
    assert stats["this_run"]["redo"] == {"images": 4, "rows": 4, "model_calls": 4}
    assert stats["retries"]["redone"]["images"] == 8 and stats["retries"]["redone"]["model_calls_replaced"] == 8
    assert stats["retries"]["images_pending"] == 0
    sources = [s for e in healed["manifest"] for s in e["sources"]]
    assert sorted(sources) == sorted(set(sources)) and len(sources) == 4


def test_a_killed_model_actor_is_restarted_and_loses_nothing(outage):
    assert outage["killed"], "no proposal actor was found to kill"
    assert max(outage["restarts"]) >= 1
    assert outage["runs"][3]["hits"] >= 4  # the batch in flight was sent again to the restarted actor


def test_a_kill_inside_a_commit_is_redone_once_by_the_real_rerun(outage):
    rerun, cut = outage["runs"][4], outage["cut"]
    assert rerun["result"].run["images"] == len(cut["sources"]) == 2 and rerun["hits"] == 2
    rows = rerun["drops"]
    assert sorted(d["source"] for d in rows) == sorted({d["source"] for d in rows}) and len(rows) == 4
    assert not list((outage["out"] / "kept").glob("*.parquet"))  # the cut chunk's files were not counted
    assert rerun["result"].stats["images"]["in"] == 4 and rerun["result"].stats["reconciliation_problems"] == []
    assert cut["chunk"] not in {e["chunk"] for e in rerun["manifest"]}


def test_after_success_nothing_is_redone(outage):
    last = outage["runs"][5]
    files = {p.stem for p in (outage["out"] / "drops").glob("*.parquet")}
    assert files == {e["chunk"] for e in last["manifest"]}  # superseded and cut chunks left no file
    assert last["hits"] == 0 and last["result"].run["images"] == 0


def test_the_circuit_breaker_stops_the_job_naming_model_and_error(ray_session, teacher, images, tmp_path):
    out = tmp_path / "out"
    teacher.mode = "down"
    cfg = config(teacher, images, out, "reliability.breaker_window=2", "reliability.breaker_error_share=0.5",
                 "output.chunk_size=1")
    try:
        with pytest.raises(CircuitOpenError) as err:
            run_synthesis(cfg)
    finally:
        teacher.mode = "up"
    assert "'teacher'" in str(err.value) and "http_500" in str(err.value) and "proposal" in str(err.value)
    assert teacher.hits < 100
    store = OutputStore(str(out))
    assert store.finished_sources(3) == set()  # what it committed is retryable, nothing is lost
    stats = json.loads((out / "stats.json").read_text())
    assert stats["reconciliation_problems"] == []


def test_no_secret_in_anything_a_run_writes(outage, teacher):
    assert teacher.auth == {f"Bearer {FAKE_KEY}"}  # the key did reach the endpoint
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    written = [p for p in outage["out"].parent.rglob("*") if p.is_file()] + [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert len(written) > 5
    leaked = [str(p) for p in written if FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []


# --------------------------------------------------------------------------- the store, driven with rows (no Ray)


def question_rows(source: str, *, failed: bool) -> list[dict]:
    """One object with two questions as the last stage gives them: both kept, or the second dropped by a failed call."""
    from synth_rows import new_row

    base = {**new_row(source), "object_index": 0, "n_objects": 1, "object_name": "cup", "n_questions": 2}
    rows = [{**base, "question_index": q, "question": f"q{q}", "id": f"{source}-{q}", "problem": "p", "answer": "A"}
            for q in range(2)]
    if failed:
        drop(rows[1], "answers_1", "engine_error", "http_503")
    return rows


def plan_for():
    from zwz_ray.synth.plan import build_synthesis

    return build_synthesis(SynthConfig())


def merged(plan, store: OutputStore) -> dict:
    """The committed stats as stats.json orders them (pipeline order: the manifest sorts keys)."""
    return finish_stats(plan, store.merged_stats(), {})


def kept_sources(store: OutputStore) -> list[str]:
    files = [p for p in store.fs.find(store.path("kept")) if p.endswith(".parquet")] if store.fs.exists(store.path("kept")) else []
    out = []
    for path in files:
        with store.fs.open(path, "rb") as fh:
            out.extend(pq.read_table(fh)["source_image"].to_pylist())
    return sorted(out)


def test_a_redone_image_replaces_its_kept_rows_and_stats(tmp_path):
    plan, store = plan_for(), OutputStore(str(tmp_path / "out"))
    first = ChunkWriter(plan, store)
    first.add("a.png", question_rows("a.png", failed=True))
    first.add("b.png", question_rows("b.png", failed=False))
    first.commit()
    assert store.finished_sources(3) == {"b.png"} and store.attempts() == {"a.png": 1}
    assert kept_sources(store) == ["a.png", "b.png", "b.png"]
    again = ChunkWriter(plan, store, store.attempts())
    again.add("a.png", question_rows("a.png", failed=False))
    again.commit()
    assert kept_sources(store) == ["a.png", "a.png", "b.png", "b.png"]  # a's first attempt is gone, not doubled
    assert store.finished_sources(3) == {"a.png", "b.png"}
    stats = merged(plan, store)
    assert reconcile(stats) == [] and stats["kept_rows"] == 4 and stats["drop_rows"] == 0 and stats["retryable_drops"] == 0
    assert stats["images"] == {"in": 2, "with_kept_rows": 2, "fully_dropped": 0}
    assert store.retry_stats(3)["redone"] == {"images": 1, "rows_replaced": 2, "retryable_drops_replaced": 1,
                                              "model_calls_replaced": 0}
    chunks = {e["chunk"] for e in store.entries()}
    assert {p.stem for p in (tmp_path / "out" / "kept").glob("*.parquet")} == chunks


def test_a_kill_inside_a_commit_neither_loses_nor_duplicates_the_chunk(tmp_path):
    """The state a SIGKILL between the kept file's move and the manifest line leaves, written exactly."""
    plan, store = plan_for(), OutputStore(str(tmp_path / "out"))
    done = ChunkWriter(plan, store)
    done.add("a.png", question_rows("a.png", failed=False))
    done.commit()
    cut = ChunkWriter(plan, store)
    cut.add("b.png", question_rows("b.png", failed=False))
    cut._writer.close()
    cut._fh.close()
    store.fs.mv(cut.staged, store.path("kept", f"{cut.chunk}.parquet"))  # commit's first step; then the kill
    assert kept_sources(store) == ["a.png", "a.png", "b.png", "b.png"] and store.finished_sources(3) == {"a.png"}
    rerun = OutputStore(str(tmp_path / "out"))  # what the next run does before its stream
    rerun.clean_uncommitted()
    assert kept_sources(rerun) == ["a.png", "a.png"]
    redo = ChunkWriter(plan, rerun, rerun.attempts())
    redo.add("b.png", question_rows("b.png", failed=False))
    redo.commit()
    assert kept_sources(rerun) == ["a.png", "a.png", "b.png", "b.png"]
    assert reconcile(merged(plan, rerun)) == [] and rerun.merged_stats()["kept_rows"] == 4


class RefusingFS(MemoryFileSystem):
    """An in-memory object store whose Nth file write fails, as a remote store returning errors does."""

    protocol = "refusing"
    fail_at = 0  # never
    writes = 0
    store: dict = {}  # its own files, apart from memory://
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode or "a" in mode:
            type(self).writes += 1
            if type(self).writes == self.fail_at:
                raise OSError(503, "SlowDown: the store refused the write")
        return super()._open(path, mode, **kwargs)

    def pipe_file(self, path, value, **kwargs):
        type(self).writes += 1
        if type(self).writes == self.fail_at:
            raise OSError(503, "SlowDown: the store refused the write")
        return super().pipe_file(path, value, **kwargs)


@pytest.mark.parametrize("fail_at", [2, 3], ids=["drops_file", "manifest"])
def test_a_failed_write_fails_the_chunk_not_the_accounting(fail_at):
    fsspec.register_implementation("refusing", RefusingFS, clobber=True)
    RefusingFS.store.clear()
    RefusingFS.writes, RefusingFS.fail_at = 0, 0
    plan, store = plan_for(), OutputStore("refusing://bucket/out")
    first = ChunkWriter(plan, store)
    first.add("a.png", question_rows("a.png", failed=False))
    first.commit()
    RefusingFS.writes, RefusingFS.fail_at = 0, fail_at  # writes: 1 staged kept rows, 2 drops, 3 the manifest PUT
    second = ChunkWriter(plan, store)
    second.add("b.png", question_rows("b.png", failed=False))
    with pytest.raises(OSError, match="SlowDown"):
        second.commit()
    assert store.finished_sources(3) == {"a.png"} and reconcile(merged(plan, store)) == []
    rerun = OutputStore("refusing://bucket/out")
    rerun.clean_uncommitted()
    assert kept_sources(rerun) == ["a.png", "a.png"]  # the half-written chunk's kept file is gone
    redo = ChunkWriter(plan, rerun, rerun.attempts())
    redo.add("b.png", question_rows("b.png", failed=False))
    redo.commit()
    assert rerun.finished_sources(3) == {"a.png", "b.png"} and kept_sources(rerun) == ["a.png", "a.png", "b.png", "b.png"]
    assert rerun.merged_stats()["kept_rows"] == 4


# --------------------------------------------------------------------------- safe loading


def test_no_loader_trusts_remote_code():
    """Every call in zwz_ray that names ``trust_remote_code`` passes a config value or False, never True."""
    import ast

    offenders = []
    for path in (ROOT / "zwz_ray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "trust_remote_code" and isinstance(kw.value, ast.Constant) and kw.value.value:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                    if kw.arg is None and isinstance(kw.value, ast.Dict) and any(
                            isinstance(k, ast.Constant) and k.value == "trust_remote_code" for k in kw.value.keys):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_checkpoint_rank_state_loads_with_weights_only(tmp_path):
    import random

    import numpy as np
    import torch

    from zwz_ray.train.checkpoint import rng_state, set_rng_state

    path = tmp_path / "rank_00000.pt"
    torch.save({"epoch": 1, "rows_consumed": 5, "drops": {"bad_image": 2}, "rng": rng_state()}, path)
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    state = torch.load(path, weights_only=True)  # refuses anything that is not plain data
    set_rng_state(state.pop("rng"))
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert state == {"epoch": 1, "rows_consumed": 5, "drops": {"bad_image": 2}}
