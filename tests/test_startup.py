"""Mistakes caught before work: one ``config error:`` line, exit 2, no Ray; row reading; no retry of bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zwz_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the CLI, in a fresh process

# (job, --set overrides with {t} = a temp folder, the key the one error line must name, what it must say)
CASES = {
    "synth_output_is_a_file": ("synthesize", ["input.paths=[{t}/images]", "output.dir={t}/afile"], "output.dir", "existing file"),
    "synth_output_under_a_file": ("synthesize", ["input.paths=[{t}/images]", "output.dir={t}/afile/out"], "output.dir",
                                  "cannot be created"),
    "synth_missing_images": ("synthesize", ["input.paths=[{t}/nowhere]", "output.dir={t}/out"], "input.paths[0]", "does not exist"),
    "synth_folder_without_images": ("synthesize", ["input.paths=[{t}/empty]", "output.dir={t}/out"], "input.paths[0]",
                                    "holds no image"),
    "distill_missing_data": ("distill", ["data.path={t}/nowhere", "output.dir={t}/out"], "data.path", "does not exist"),
    "distill_output_is_a_file": ("distill", ["data.path={t}/rows.parquet", "output.dir={t}/afile"], "output.dir", "existing file"),
    "distill_drops_only": ("distill", ["data.path={t}/drops_only", "output.dir={t}/out"], "data.path", "holds no rows"),
    "distill_wrong_columns": ("distill", ["data.path={t}/wrong.parquet", "output.dir={t}/out"], "data.path", "columns"),
    "distill_too_few_rows": ("distill", ["data.path={t}/rows.parquet", "output.dir={t}/out", "trainer.num_workers=2"], "data.path",
                             "fewer than one global batch"),
    "eval_output_is_a_file": ("evaluate", ["benchmark.path={t}/bench.parquet", "output.dir={t}/afile"], "output.dir", "existing file"),
    "eval_missing_benchmark": ("evaluate", ["benchmark.path={t}/nowhere.parquet", "benchmark.generate_if_missing=false",
                                            "output.dir={t}/out"], "benchmark.path", "does not exist"),
    "eval_missing_model_dir": ("evaluate", ["benchmark.path={t}/bench.parquet", "models.0.model={t}/no_model",
                                            "output.dir={t}/out"], "models[0].model", "does not exist"),
    "r2i_output_is_a_file": ("r2i", ["output.dir={t}/afile"], "output.dir", "existing file"),
    "r2i_missing_images": ("r2i", ["output.dir={t}/out", "synth.input.paths=[{t}/nowhere]"], "synth.input.paths[0]", "does not exist"),
    "r2i_chain_owned_key": ("r2i", ["output.dir={t}/out", "synth.output.dir={t}/elsewhere"], "synth.output.dir", "the chain sets it"),
    "r2i_chain_owned_ray": ("r2i", ["output.dir={t}/out", "distill.ray.num_cpus=1"], "distill.ray.num_cpus", "the chain sets it"),
}

DRIVER = textwrap.dedent('''
    import contextlib, importlib, io, json, os, sys
    cases, t = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for name, (job, sets, _, _) in cases.items():
        err = io.StringIO()
        args = [a for s in sets for a in ("--set", s.format(t=t))]
        with contextlib.redirect_stderr(err):
            try:
                code = importlib.import_module(f"pipelines.{job}").main(args)
            except SystemExit as exc:
                code = exc.code
        results[name] = {"code": code, "stderr": err.getvalue()}
    import ray
    print(json.dumps({"results": results, "ray_initialized": ray.is_initialized()}))
''')


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """Every case through its job's ``main`` in one fresh process (so nothing of this test session's Ray counts),
    with Ray's temp folder pointed at a new place: a started Ray would create it."""
    t = tmp_path_factory.mktemp("mistakes")
    (t / "afile").write_text("not a folder")
    (t / "images").mkdir()
    (t / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (t / "empty").mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [b"x"], "problem": ["p"], "answer": ["A"]}), t / "rows.parquet")
    pq.write_table(pa.table({"question": ["q"]}), t / "wrong.parquet")
    (t / "drops_only" / "drops").mkdir(parents=True)
    pq.write_table(pa.table({"source": ["s"], "stage": ["x"], "reason": ["r"]}), t / "drops_only" / "drops" / "c0.parquet")
    pq.write_table(pa.table({"id": ["1"], "query": ["q?"], "response": ["a"], "image": [b"x"]}), t / "bench.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(t / "ray_tmp")}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(CASES), str(t)], cwd=str(t), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, t


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_config_error_line_and_exit_2(cli_run, case):
    out, _ = cli_run
    _, _, key, problem = CASES[case]
    result = out["results"][case]
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, result
    assert len(lines) == 1 and lines[0].startswith(f"config error: {key}") and problem in lines[0], lines


def test_no_mistake_started_ray(cli_run):
    out, t = cli_run
    assert out["ray_initialized"] is False
    assert not (t / "ray_tmp").exists()  # ray.init would have made its session folder here


# --------------------------------------------------------------------------- where distillation finds its rows


def _rows_table(ids: list[str]) -> pa.Table:
    return pa.table({"id": ids, "image": [b"img"] * len(ids), "problem": ["p"] * len(ids), "answer": ["A"] * len(ids),
                     "source": ["s"] * len(ids)})


def synthesis_output(root: Path) -> Path:
    """A synthesis output folder as the store writes it: two committed chunks (one kept nothing), a leftover
    kept file of a chunk that never committed, and drops."""
    out = root / "synth"
    (out / "kept").mkdir(parents=True)
    (out / "drops").mkdir()
    pq.write_table(_rows_table(["a", "b"]), out / "kept" / "c00000_x.parquet")
    pq.write_table(_rows_table(["zombie"]), out / "kept" / "c00002_dead.parquet")  # no manifest line: not committed
    for chunk in ("c00000_x", "c00001_y"):
        pq.write_table(pa.table({"source": ["s"], "stage": ["consensus"], "reason": ["no_consensus"], "problem": [""]}),
                       out / "drops" / f"{chunk}.parquet")
    (out / "manifest.jsonl").write_text("".join(json.dumps({"chunk": c, "sources": ["s"], "config_hash": "h", "stats": {}}) + "\n"
                                                for c in ("c00000_x", "c00001_y")))
    return out


def test_rows_of_a_synthesis_folder_and_its_kept_folder_are_the_committed_kept_rows(tmp_path):
    from zwz_ray.train.data import locate_rows

    out = synthesis_output(tmp_path)
    for path, kind in ((out, "synthesis output"), (out / "kept", "kept folder")):
        rows = locate_rows(str(path))
        assert (rows.kind, rows.layout, rows.num_rows) == (kind, "synthesis", 2)
        assert rows.files == [str(out / "kept" / "c00000_x.parquet")]


def test_plain_parquet_rows_never_include_drops(tmp_path):
    from zwz_ray.train.data import locate_rows

    folder = tmp_path / "rows"
    (folder / "drops").mkdir(parents=True)
    pq.write_table(_rows_table(["a", "b", "c"]), folder / "part-0.parquet")
    pq.write_table(_rows_table(["d"]), folder / "drops" / "part-0.parquet")
    (folder / "_SUCCESS").write_text("")
    assert locate_rows(str(folder)).num_rows == 3
    single = locate_rows(str(folder / "part-0.parquet"))
    assert (single.kind, single.num_rows) == ("parquet", 3)
    with pytest.raises(ConfigError, match="data.path: .* has the columns"):
        pq.write_table(pa.table({"question": ["q"]}), tmp_path / "wrong.parquet")
        locate_rows(str(tmp_path / "wrong.parquet"))


def test_easyr1_rows_of_the_released_training_set(tmp_path):
    """The layout of inclusionAI/ZwZ-RL-VQA: an ``images`` list (struct with bytes, or a relative path),
    ``problem`` with the ``<image>`` placeholder, ``answer`` a letter; no id column."""
    from zwz_ray.train.data import easyr1_rows, locate_rows

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "b.png").write_bytes(b"PNG-bytes-on-disk")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "images": pa.array([[{"bytes": b"inline", "path": None}], [{"bytes": None, "path": "img/b.png"}], []],
                           pa.list_(struct)),
        "problem": ["<image>\nWhat colour is the car? A. red B. blue", "<image>Which sign? A. stop B. yield", "<image>x"],
        "answer": ["A", "B", "A"],
    })
    pq.write_table(table, tmp_path / "train.parquet")
    rows = locate_rows(str(tmp_path / "train.parquet"))
    assert (rows.layout, rows.num_rows) == ("easyr1", 3)
    parquet = str(tmp_path / "train.parquet")
    out = easyr1_rows(table.append_column("path", pa.array([parquet] * 3))).to_pylist()
    assert [r["image"] for r in out] == [b"inline", b"PNG-bytes-on-disk", None]  # an empty list: missing_image downstream
    assert out[0]["problem"] == "What colour is the car? A. red B. blue" and out[1]["problem"].startswith("Which sign?")
    assert [r["answer"] for r in out] == ["A", "B", "A"] and len({r["id"] for r in out}) == 3


def test_rows_read_through_ray(ray_session, tmp_path):
    from zwz_ray.train.data import locate_rows, read_rows

    out = synthesis_output(tmp_path)
    ds = read_rows(locate_rows(str(out)))
    assert sorted(r["id"] for r in ds.take_all()) == ["a", "b"]
    pq.write_table(pa.table({"images": [[b"raw"]], "problem": ["<image>Q? A. x B. y"], "answer": ["B"]}), tmp_path / "e.parquet")
    (row,) = read_rows(locate_rows(str(tmp_path / "e.parquet"))).take_all()
    assert (row["image"], row["problem"], row["answer"]) == (b"raw", "Q? A. x B. y", "B")


# --------------------------------------------------------------------------- a worker-side deterministic failure


def test_rows_that_all_drop_end_the_run_once_without_a_retry(ray_session, tmp_path):
    """Every row has no image: only a worker sees it. With max_failures 1 the run still ends after one attempt
    (Ray's actor table holds one Train worker more, not two) with the workers' message."""
    from ray._private.state import actors

    from zwz_ray.preflight import DataError
    from zwz_ray.train import DistillConfig, run_distill

    rows = [{"id": f"r{i}", "image": None, "problem": "Q? A. x B. y", "answer": "A"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("image", pa.binary()),
                                                                ("problem", pa.string()), ("answer", pa.string())])),
                   tmp_path / "rows.parquet")
    cfg = load_config(DistillConfig, None, [f"data.path={tmp_path / 'rows.parquet'}", f"output.dir={tmp_path / 'out'}",
                                            f"checkpoint.storage_path={tmp_path / 'runs'}", "checkpoint.max_failures=1",
                                            "trainer.epochs=1", "trainer.controller_poll_s=0.1", "data.min_pixels=3136",
                                            "data.max_pixels=16384", "output.tensorboard=false"])

    def train_workers() -> int:
        return sum(1 for a in actors().values() if a["ActorClassName"] == "RayTrainWorker")

    before = train_workers()
    with pytest.raises(DataError, match="no training step could be made: rows were dropped .*missing_image"):
        run_distill(cfg)
    assert train_workers() - before == 1  # one attempt of one worker


# --------------------------------------------------------------------------- demo scenes only when asked


def test_demo_scenes_are_auto_in_the_laptop_config():
    from zwz_ray.synth.config import SynthConfig

    laptop = str(ROOT / "configs" / "synth" / "laptop.yaml")
    assert load_config(SynthConfig, laptop).input.demo_enabled  # no paths: the demo scenes
    given = load_config(SynthConfig, laptop, ["input.paths=[/data/images]"])
    assert given.input.generate_demo == "auto" and not given.input.demo_enabled
    forced = load_config(SynthConfig, laptop, ["input.paths=[/data/images]", "input.generate_demo=true"])
    assert forced.input.demo_enabled
    assert not load_config(SynthConfig, None).input.demo_enabled  # the paper's defaults: no demo
    with pytest.raises(ConfigError, match="generate_demo"):
        load_config(SynthConfig, laptop, ["input.generate_demo=sometimes"])
