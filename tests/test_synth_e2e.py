"""End to end on real Ray with tiny models through the real hf engine, and resume.

One scenario, several checks: a synthesis job over 5 demo scenes and 3 bad files runs in a
subprocess and is killed right after its first chunk commits; the same config is then rerun
in this process (it must finish the rest without redoing committed images), and once more
(it must do nothing). The slow test runs the laptop config exactly as shipped.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from zwz_ray.config import load_config
from zwz_ray.demo import ensure_demo_images
from zwz_ray.synth.accounting import reconcile
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.run import run_synthesis
from zwz_ray.synth.store import OutputStore

ROOT = Path(__file__).resolve().parents[1]
LAPTOP = ROOT / "configs" / "synth" / "laptop.yaml"
BAD = {"empty.png": b"", "text.jpg": b"not an image\n" * 20}
ENGINES = ["teacher", "answerers.0", "answerers.1", "judge", "grounding", "student"]


def overrides(images: Path, out: Path) -> list[str]:
    sets = [f"input.paths=[{images}]", "input.generate_demo=false", f"output.dir={out}", "output.chunk_size=1",
            "cpu.batch_size=1", "ray.progress_bars=false"]
    # One row per batch, so that images finish (and commit) one at a time.
    return sets + [f"models.{e}.resources.batch_size=1" for e in ENGINES]


def read_rows(out: Path, folder: str) -> list[dict]:
    files = sorted((out / folder).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def run_and_kill_after_first_commit(sets: list[str], out: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "pipelines.synthesize", "--config", str(LAPTOP)] + [a for s in sets for a in ("--set", s)]
    log = open(out.parent / "killed_run.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if manifest.exists() and manifest.read_text().strip():
                break
            time.sleep(0.2)
        committed = manifest.read_text() if manifest.exists() else ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started
        proc.wait()
        log.close()
    assert committed.strip(), (out.parent / "killed_run.log").read_text()[-3000:]
    return {"returncode": proc.returncode, "manifest_lines": len(committed.strip().splitlines())}


@pytest.fixture(scope="module")
def scenario(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("synth_e2e")
    images = base / "images"
    ensure_demo_images(str(images), n=5, seed=0, size=(1280, 1216))
    for name, data in BAD.items():
        (images / name).write_bytes(data)
    Image.new("RGB", (640, 480), "white").save(images / "small.png")
    out = base / "out"
    sets = overrides(images, out)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(ROOT)}
    killed = run_and_kill_after_first_commit(sets, out, env)
    committed_before = OutputStore(str(out)).finished_sources()
    cfg = load_config(SynthConfig, str(LAPTOP), sets)
    start = time.perf_counter()
    resumed = run_synthesis(cfg)
    resumed_s = time.perf_counter() - start
    kept, drops = read_rows(out, "kept"), read_rows(out, "drops")
    again = run_synthesis(cfg)
    return {"out": out, "killed": killed, "committed_before": committed_before, "resumed": resumed,
            "resumed_s": resumed_s, "kept": kept, "drops": drops, "again": again, "n_images": 8}


def test_the_kill_left_work_for_the_rerun(scenario):
    assert scenario["killed"]["returncode"] != 0  # it was killed, not finished
    assert 1 <= len(scenario["committed_before"]) < scenario["n_images"]
    assert scenario["resumed"].run["images"] == scenario["n_images"] - len(scenario["committed_before"])


def test_rerun_spent_no_model_call_on_committed_images(scenario):
    store = OutputStore(str(scenario["out"]))
    entries = store.entries()
    sources = [s for e in entries for s in e["sources"]]
    assert len(sources) == len(set(sources)) == scenario["n_images"]  # every image committed exactly once
    calls_after_kill = 0
    for entry in entries:
        if set(entry["sources"]) & scenario["committed_before"]:
            continue
        calls_after_kill += sum(m["calls"] for m in entry["stats"]["models"].values())
    assert scenario["resumed"].run["model_calls"] == calls_after_kill > 0


def test_no_duplicates_and_every_image_accounted_for(scenario):
    kept, drops = scenario["kept"], scenario["drops"]
    ids = [r["id"] for r in kept]
    assert len(ids) == len(set(ids))
    stats = json.loads((scenario["out"] / "stats.json").read_text())
    assert stats["reconciliation_problems"] == [] and reconcile(stats) == []
    assert stats["kept_rows"] == len(kept) and stats["drop_rows"] == len(drops)
    images = stats["images"]
    assert images["in"] == scenario["n_images"] == images["with_kept_rows"] + images["fully_dropped"]
    seen = {r["source_image"] for r in kept} | {r["source"] for r in drops}
    assert len(seen) == scenario["n_images"]
    reasons = {Path(r["source"]).name: r["reason"] for r in drops if r["stage"] == "image_pool"}
    assert reasons == {"empty.png": "empty_file", "text.jpg": "not_an_image", "small.png": "too_small"}
    assert sum(stats["drop_reasons"].values()) == len(drops)


def test_kept_rows_went_through_every_stage(scenario):
    kept = scenario["kept"]
    assert kept, "the tiny pipeline kept no row; see stats.json drop_reasons"
    stats = json.loads((scenario["out"] / "stats.json").read_text())
    assert all(s["rows_in"] > 0 for s in stats["stages"].values())
    for row in kept:
        assert Image.open(io.BytesIO(row["image"])).size == (1280, 1216)
        assert Image.open(io.BytesIO(row["crop"])).mode == "RGB"
        assert row["answer"] in "ABCD" and len(row["options"]) == 4
        assert row["options"]["ABCD".index(row["answer"])] == row["answer_text"]
        assert len(row["teacher_answers"]) == 8 and row["difficulty_correct"] <= 1
        assert row["problem"].startswith(row["question"]) and row["validation_reason"]
        x1, y1, x2, y2 = row["bbox"]
        assert 0 <= x1 < x2 <= row["image_width"] and 0 <= y1 < y2 <= row["image_height"]
        provenance = json.loads(row["provenance"])
        assert provenance["config_hash"] == stats["config_hash"] and provenance["models"]["judge"] == "tiny:text"
    models = stats["models"]
    assert {"tiny:qwen2_5_vl", "tiny:qwen3_vl", "tiny:text", "tiny:sam3@5"} <= set(models)
    assert all(m["prompt_tokens"] > 0 for label, m in models.items() if label != "tiny:sam3@5")


def test_stats_give_the_cost_per_kept_row(scenario):
    stats = json.loads((scenario["out"] / "stats.json").read_text())
    cost, kept = stats["cost_per_kept_row"], stats["kept_rows"]
    assert cost["kept_rows"] == kept > 0
    hf = {label: m for label, m in stats["models"].items() if label != "tiny:sam3@5"}
    for label, m in hf.items():
        mine = cost["models"][label]
        assert mine["per_kept_row"]["calls"] == round(m["calls"] / kept, 3) and mine["total"]["calls"] == m["calls"]
        assert mine["total"]["engine_s"] > 0 and mine["loads"] >= 1 and mine["metered"]
        assert mine["gpus_per_replica"] == 0.0 and mine["per_kept_row"]["gpu_s"] == 0.0  # the laptop models run on CPU
    assert cost["models"]["tiny:sam3@5"]["metered"] is False
    assert cost["all_models"]["per_kept_row"]["calls"] == round(sum(m["calls"] for m in hf.values()) / kept, 3)
    summary = scenario["again"].summary().splitlines()
    assert len(summary) == 5 and summary[2].startswith("model cost per kept row: ") and summary[2].endswith(" 0.0 GPU-s")


def test_rerun_after_success_does_nothing(scenario):
    again = scenario["again"]
    assert again.run["model_calls"] == 0 and again.run["images"] == 0
    assert again.kept_rows == len(scenario["kept"])
    assert read_rows(scenario["out"], "kept") == scenario["kept"]


@pytest.mark.slow
def test_laptop_config_as_shipped(ray_session, tmp_path):
    cfg = load_config(SynthConfig, str(LAPTOP), [f"demo.dir={tmp_path / 'demo'}", f"output.dir={tmp_path / 'out'}"])
    result = run_synthesis(cfg)
    assert result.kept_rows > 0 and result.stats["reconciliation_problems"] == []
    assert "kept rows" in result.summary()
