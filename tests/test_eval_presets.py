"""Benchmark presets on small files written in exactly each published layout; the image path rule; the suite job.

Every preset: item count, answers / letters, views and the benchmark's own breakdown from
hand-made predictions (no model); a malformed file of each is a BenchmarkError naming the column
and the file. The suite runs end to end once, on two tiny benchmarks with a tiny model through Ray.
"""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from zwz_ray.config import ConfigError, EngineConfig, ResourcesConfig, from_dict
from zwz_ray.eval.benchmarks import PRESETS, benchmark_scores, open_any
from zwz_ray.eval.benchmarks.countqa import parse_count
from zwz_ray.eval.config import BenchmarkConfig, EvalConfig, InferenceConfig, OutputConfig
from zwz_ray.eval.items import explode_views
from zwz_ray.eval.loaders import BenchmarkError, open_benchmark
from zwz_ray.eval.writers import write_zoombench

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _png(seed: int = 0, size=(32, 24)) -> bytes:
    """A noisy PNG (large enough that its base64 text is recognised as an image, as real ones are)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _b64(seed: int = 0) -> str:
    return base64.b64encode(_png(seed)).decode()


def _items(bench) -> pd.DataFrame:
    return pd.concat(list(bench.iter_items(batch_size=3)), ignore_index=True)


def _open(preset: str, path, **kw):
    return open_any(BenchmarkConfig(path=str(path), preset=preset, **kw))


def _scores(bench, right: set[str], view: str = "global", responses: dict | None = None) -> dict:
    """The benchmark's own scores for predictions that are right exactly on the ``right`` ids."""
    items = _items(bench)
    rows = [{"model": "m", "id": i, "view": view, "correct": i in right, "rule": "mcq_letter", "answer": a,
             "response": (responses or {}).get(i), "extracted": None, "verdict": "", "category": "ignored"}
            for i, a in zip(items["id"], items["answer"])]
    return benchmark_scores(bench, {"m": pd.DataFrame(rows)})["m"][view]


# --------------------------------------------------------------------------- ZoomBench and the reference JSON


def test_zoombench_preset_both_views(tmp_path):
    rows = [{"id": i, "question": f"What is written? #{i}", "answer": "cat", "image": _png(i), "crop": _png(10 + i),
             "bbox": [1, 1, 9, 9], "category": "ocr" if i < 2 else "color"} for i in range(3)]
    path = write_zoombench(str(tmp_path / "zb" / "test.parquet"), rows)
    bench = _open("zoombench", tmp_path / "zb")
    items = _items(bench)
    assert bench.files == [path] and items["id"].tolist() == ["0", "1", "2"] and items["crop"].notna().all()
    views = explode_views(items, ["global", "regional"])
    assert len(views) == 6
    s = _scores(bench, {"0", "2"})
    assert s["headline"] == pytest.approx(2 / 3) and s["by_category"]["ocr"]["accuracy"] == 0.5
    assert _scores(bench, {"1"}, view="regional")["by_category"]["color"]["accuracy"] == 0.0


def test_reference_json_absolute_paths_remapped_through_image_root(tmp_path):
    root = tmp_path / "moved"
    (root / "mnt" / "eval" / "img").mkdir(parents=True)
    for name, seed in (("a.png", 1), ("a_crop.png", 2)):
        (root / "mnt" / "eval" / "img" / name).write_bytes(_png(seed))
    rows = [{"images": ["/mnt/eval/img/a.png"], "crop_images": ["/mnt/eval/img/a_crop.png"], "query": "Colour?",
             "response": "red", "question_type": "color"},
            {"images": ["/mnt/eval/img/gone.png"], "query": "Count?", "response": "3"}]
    (tmp_path / "ref.json").write_text(json.dumps(rows))
    bench = _open("reference", tmp_path / "ref.json", image_root=str(root))
    items = _items(bench)
    assert items["id"].tolist() == ["0", "1"] and items["image_size"][0] == [32, 24] and items["crop"][0] is not None
    assert items["image_error"][1].startswith("not_found")
    # the prefix form: /mnt/eval is dropped before joining
    stripped = _items(_open("reference", tmp_path / "ref.json", image_root=str(root / "mnt" / "eval"), image_prefix="/mnt/eval"))
    assert stripped["image_size"][0] == [32, 24]
    # without an image_root an absolute path is never read where it points: recorded per item
    plain = _items(_open("reference", tmp_path / "ref.json"))
    assert plain["image"].isna().all() and plain["image_error"][0].startswith("bad_path") and "image_root" in plain["image_error"][0]


def test_relative_paths_may_not_escape_the_benchmark_folder(tmp_path):
    (tmp_path / "secret.png").write_bytes(_png())
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "ok.png").write_bytes(_png(3))
    rows = [{"question": "q", "answer": "a", "image": "../secret.png"}, {"question": "q", "answer": "a", "image": ["ok.png"]},
            {"question": "q", "answer": "a", "image": "sub/../../secret.png"}]
    (tmp_path / "bench" / "b.json").write_text(json.dumps(rows))
    items = _items(open_benchmark(BenchmarkConfig(path=str(tmp_path / "bench" / "b.json"))))
    assert items["image"][0] is None and items["image_error"][0].startswith("bad_path") and "leaves" in items["image_error"][0]
    assert items["image_size"][1] == [32, 24]  # a list of one image is that image
    assert items["image_error"][2].startswith("bad_path")


def test_list_valued_image_columns_hold_one_image(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "b.json").write_text(json.dumps([{"question": "q", "answer": "a", "images": ["a.png", "a.png"]}]))
    with pytest.raises(BenchmarkError, match=r"b\.json.*'images'.*2 images"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "b.json")))
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"], "image": [[_png(), _png(1)]]}), tmp_path / "two.parquet")
    with pytest.raises(BenchmarkError, match=r"two\.parquet.*'image'.*2 images"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "two.parquet")))


# --------------------------------------------------------------------------- V*


def _vstar_folders(root) -> None:
    for folder, name, options in (("direct_attributes", "sa_1", ["red", "blue", "green", "black"]),
                                  ("direct_attributes", "sa_2", ["white", "yellow", "pink", "grey"]),
                                  ("relative_position", "sa_3", ["left", "right"])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(_png(len(name)))).save(root / folder / f"{name}.jpg")
        (root / folder / f"{name}.json").write_text(json.dumps(
            {"target_object": ["cup"], "bbox": [[2, 3, 10, 5]], "question": f"What is the colour of the cup? {name}",
             "options": options}))


def test_vstar_folders_correct_option_first(tmp_path):
    _vstar_folders(tmp_path / "vstar")
    bench = _open("vstar", tmp_path / "vstar")
    items = _items(bench)
    assert items["id"].tolist() == ["direct_attributes/sa_1", "direct_attributes/sa_2", "relative_position/sa_3"]
    firsts = ["red", "white", "left"]
    for (_, item), first in zip(items.iterrows(), firsts):  # the gold letter names the option published first
        assert item["is_mcq"] and item["options"][ord(item["answer"]) - 65] == first
        assert f"({item['answer']}) {first}" in item["question"]
    assert len(set(items["answer"])) > 1 or items["answer"].tolist() != ["A"] * 3  # not always A
    assert items["bbox"][0] == [2.0, 3.0, 12.0, 8.0] and items["image_size"][0] == [32, 24]
    s = _scores(bench, {"direct_attributes/sa_1", "relative_position/sa_3"})
    assert s["headline"] == pytest.approx(2 / 3)
    assert s["by_category"] == {"attribute": {"n": 2, "accuracy": 0.5}, "spatial": {"n": 1, "accuracy": 1.0}}


def test_vstar_parquet_mirror(tmp_path):
    pq.write_table(pa.table({"question_id": [0, 1], "image": pa.array([{"bytes": _png(), "path": "0.jpg"}] * 2, IMAGE_STRUCT),
                             "text": ["What colour is the car?\n(A) red\n(B) blue\n(C) green\n(D) white", "Is the cup left of the dog?\n(A) yes\n(B) no"],
                             "label": ["C", "A"], "category": ["direct_attributes", "relative_position"]}), tmp_path / "test.parquet")
    bench = _open("vstar", tmp_path)
    items = _items(bench)
    assert items["answer"].tolist() == ["C", "A"] and items["options"][0] == ["red", "blue", "green", "white"]
    assert _scores(bench, {"1"})["by_category"]["spatial"]["accuracy"] == 1.0


# --------------------------------------------------------------------------- HR-Bench


def _hrbench_rows(n_questions: int = 2) -> list[dict]:
    rows, index = [], 0
    for q in range(n_questions):
        for category in ("single", "cross"):
            for cycle in range(2):  # each question in two option orders sharing a cycle category
                rows.append({"index": index, "question": f"What is on the sign {q}?", "A": "stop", "B": "go", "C": "wait",
                             "D": "yield", "answer": "ABCD"[cycle], "category": category,
                             "cycle_category": f"{category}_{q}", "image": _b64(index)})
                index += 1
    return rows


def test_hrbench_tsv_cycle_averaged(tmp_path):
    pd.DataFrame(_hrbench_rows()).to_csv(tmp_path / "hr_bench_4k.tsv", sep="\t", index=False)
    pd.DataFrame(_hrbench_rows(1)).to_csv(tmp_path / "hr_bench_8k.tsv", sep="\t", index=False)
    bench = _open("hrbench_4k", tmp_path)
    assert [os.path.basename(f) for f in bench.files] == ["hr_bench_4k.tsv"]
    items = _items(bench)
    assert len(items) == 8 and items["answer"].tolist()[:2] == ["A", "B"] and items["is_mcq"].all()
    assert items["image_size"].map(list).tolist()[0] == [32, 24]
    assert len(_items(_open("hrbench_8k", tmp_path))) == 4
    # single: cycles single_0 (2/2) and single_1 (0/2) -> 0.5; cross: cross_0 (1/2), cross_1 (1/2) -> 0.5
    right = {"0", "1", "2", "6"}
    s = _scores(bench, right)
    assert (s["single"], s["cross"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert s["headline"] == s["average"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


# --------------------------------------------------------------------------- MME-RealWorld


def _mme_rows() -> list[dict]:
    cats = ["Perception/Remote Sensing", "Perception/Remote Sensing", "Perception/Remote Sensing", "Perception/Monitoring",
            "Reasoning/Autonomous_Driving"]
    return [{"index": i, "question": f"What is in the image {i}?", "multi-choice options": [f"({x}) thing {x}" for x in "ABCDE"],
             "answer": "ABCDE"[i], "category": c, "l2-category": "count" if i % 2 else "color", "bytes": _b64(i)}
            for i, c in enumerate(cats)]


def test_mme_realworld_avg_and_avg_c(tmp_path):
    pq.write_table(pa.Table.from_pylist(_mme_rows()), tmp_path / "mme.parquet")
    bench = _open("mme_realworld", tmp_path / "mme.parquet")
    items = _items(bench)
    assert items["answer"].tolist() == list("ABCDE") and items["options"][4] == [f"thing {x}" for x in "ABCDE"]
    assert "(E) thing E" in items["question"][0]
    s = _scores(bench, {"0", "3"})  # remote sensing 1/3, monitoring 1/1, driving 0/1
    assert s["Avg"] == pytest.approx(2 / 5) and s["perception"]["Avg"] == pytest.approx(2 / 4)
    assert s["perception"]["Avg-C"] == pytest.approx((1 / 3 + 1) / 2) and s["reasoning"]["Avg"] == 0.0
    assert s["Avg-C"] == pytest.approx((1 / 3 + 1 + 0) / 3)


def test_mme_realworld_cn_tsv_with_literal_option_lists(tmp_path):
    rows = [{**r, "multi-choice options": str(r["multi-choice options"]), "category": r["category"].replace("Perception", "感知")}
            for r in _mme_rows()]
    pd.DataFrame(rows).to_csv(tmp_path / "MME_RealWorld_CN.tsv", sep="\t", index=False)
    bench = _open("mme_realworld_cn", tmp_path)
    assert len(_items(bench)) == 5 and set(bench.item_meta["task"]) == {"perception", "reasoning"}


# --------------------------------------------------------------------------- MMStar, CV-Bench, CountQA, ColorBench, BabyVision


def test_mmstar(tmp_path):
    q = "Which animal is shown?\nOptions: A: a dog, B: a cat, C: a bird, D: a fish"
    pq.write_table(pa.table({"index": [0, 1], "question": [q, q], "image": pa.array([{"bytes": _png(), "path": None}] * 2, IMAGE_STRUCT),
                             "answer": ["B", "D"], "category": ["coarse perception", "math"], "l2_category": ["image emotion", "geometry"],
                             "meta_info": [{"source": "x"}, {"source": "y"}]}), tmp_path / "mmstar.parquet")
    bench = _open("mmstar", tmp_path)
    items = _items(bench)
    assert items["options"][0] == ["a dog", "a cat", "a bird", "a fish"] and items["answer"].tolist() == ["B", "D"]
    s = _scores(bench, {"0"})
    assert s["headline"] == 0.5 and s["by_l2_category"]["geometry"]["accuracy"] == 0.0


def _cvbench_table() -> pa.Table:
    rows = [("2D", "Count", "ADE20K"), ("2D", "Relation", "ADE20K"), ("2D", "Count", "COCO"), ("3D", "Depth", "Omni3D"),
            ("3D", "Distance", "Omni3D")]
    return pa.Table.from_pylist([{"idx": i, "type": t, "task": task, "image": {"bytes": _png(i), "path": f"img/{i}.png"},
                                  "question": "How many cups?", "choices": ["1", "2", "3"], "answer": "(B)",
                                  "prompt": "How many cups? Select from the following choices.\n(A) 1\n(B) 2\n(C) 3",
                                  "filename": f"img/{i}.png", "source": src} for i, (t, task, src) in enumerate(rows)])


def test_cvbench_2d_and_3d(tmp_path):
    pq.write_table(_cvbench_table(), tmp_path / "test.parquet")
    two, three = _open("cvbench_2d", tmp_path), _open("cvbench_3d", tmp_path)
    assert _items(two)["id"].tolist() == ["0", "1", "2"] and _items(three)["id"].tolist() == ["3", "4"]
    assert _items(two)["answer"].tolist() == ["B"] * 3 and _items(two)["options"][0] == ["1", "2", "3"]
    s = _scores(two, {"0", "2"})  # ADE20K 1/2, COCO 1/1 -> (0.5 + 1) / 2, not 2/3
    assert s["headline"] == pytest.approx(0.75) and s["by_category"]["Count"]["accuracy"] == 1.0
    assert _scores(three, {"3"})["headline"] == 0.5


def test_countqa_one_row_per_image_scored_by_the_number(tmp_path):
    pq.write_table(pa.Table.from_pylist([
        {"image": {"bytes": _png(0), "path": "0.jpg"}, "questions": ["How many jackets?", "How many hangers?"], "answers": ["15", "4"],
         "categories": ["Clothing"], "is_focused": False},
        {"image": {"bytes": _png(1), "path": "1.jpg"}, "questions": ["How many eggs?"], "answers": ["100"], "categories": ["Food"],
         "is_focused": True}]), tmp_path / "test.parquet")
    bench = _open("countqa", tmp_path)
    items = _items(bench)
    assert items["id"].tolist() == ["0#0", "0#1", "1#0"] and items["answer"].tolist() == ["15", "4", "100"]
    assert items["image_size"][1] == [32, 24] and not items["is_mcq"].any()
    assert parse_count("<answer>**12**</answer>") == 12 and parse_count("I count 18 tiles, maybe 19") == 18 and parse_count("none") is None
    s = _scores(bench, set(), responses={"0#0": "There are 15 jackets.", "0#1": "<answer>5</answer>", "1#0": "about 103"})
    assert s["headline"] == pytest.approx(1 / 3) and s["relaxed_accuracy"] == pytest.approx(2 / 3)  # 103 is within 5% of 100
    assert s["by_focused"]["True"]["accuracy"] == 0.0


def test_colorbench_tasks_and_robustness(tmp_path):
    rows = [("Perception", "Color Recognition", "perception/1.png"), ("Reasoning", "Color Counting", "reasoning/2.png"),
            ("Robustness", "Color Robustness", "robustness/7.png"), ("Robustness", "Color Robustness", "robustness/7_1.png"),
            ("Robustness", "Color Robustness", "robustness/8.png")]
    pq.write_table(pa.Table.from_pylist([{"idx": i, "type": t, "task": task, "filename": f, "image": {"bytes": _png(i), "path": f},
                                          "prompt": "What colour is the car?\n(A) red\n(B) blue", "choices": ["red", "blue"],
                                          "answer": "(A)"} for i, (t, task, f) in enumerate(rows)]), tmp_path / "test.parquet")
    bench = _open("colorbench", tmp_path)
    assert len(_items(bench)) == 5 and _items(bench)["answer"].tolist() == ["A"] * 5
    s = _scores(bench, {"0", "2", "4"})  # image 7: original right, recolored wrong -> not robust; image 8 robust
    assert s["headline"] == 0.5 and s["perception"] == 1.0 and s["reasoning"] == 0.0
    assert s["robustness"] == 0.5 and s["robustness_images"] == 2


def test_babyvision_choice_and_blank(tmp_path):
    pq.write_table(pa.Table.from_pylist([
        {"taskId": 11, "question": "Which one is different?", "image": {"bytes": _png(0), "path": "a.png"}, "ansType": "choice",
         "options": ["1", "2", "3", "4"], "choiceAns": 2, "blankAns": None, "type": "Fine-grained Discrimination",
         "subtype": "Find the different"},
        {"taskId": 12, "question": "Which exit does the maze reach?", "image": {"bytes": _png(1), "path": "b.png"}, "ansType": "blank",
         "options": None, "choiceAns": None, "blankAns": "(4,7)", "type": "Visual Tracking", "subtype": "Maze"}]),
        tmp_path / "train.parquet")
    bench = _open("babyvision", tmp_path)
    items = _items(bench)
    assert items["answer"].tolist() == ["C", "(4,7)"] and items["is_mcq"].tolist() == [True, False]
    assert "(C) 3" in items["question"][0]
    s = _scores(bench, {"12"})
    assert s["headline"] == 0.5 and s["by_subtype"]["Visual Tracking/Maze"]["accuracy"] == 1.0


# --------------------------------------------------------------------------- malformed files, config, offline copies


def _write_parquet(rows):
    return lambda p: pq.write_table(pa.Table.from_pylist(rows), p / "test.parquet")


MALFORMED = {
    "zoombench": (_write_parquet([{"id": 1, "image": _png(), "response": "a"}]), "query"),
    "reference": (lambda p: (p / "ref.json").write_text(json.dumps([{"images": ["a.png"], "query": "q"}])), "response"),
    "vstar": (lambda p: _vstar_folders(p) or (p / "direct_attributes" / "sa_1.json").write_text(json.dumps({"question": "q"})),
              "options"),
    "hrbench_4k": (lambda p: pd.DataFrame([{**_hrbench_rows(1)[0], "answer": "F"}]).to_csv(p / "hr_bench_4k.tsv", sep="\t",
                                                                                            index=False), "answer"),
    "mme_realworld": (_write_parquet([{k: v for k, v in _mme_rows()[0].items() if k != "l2-category"}]), "l2-category"),
    "mmstar": (_write_parquet([{"index": 0, "question": "q", "image": _png(), "answer": "Z", "category": "c", "l2_category": "l"}]),
               "answer"),
    "cvbench_2d": (lambda p: pq.write_table(_cvbench_table().drop_columns(["source"]), p / "test.parquet"), "source"),
    "countqa": (_write_parquet([{"image": {"bytes": _png(), "path": "0.jpg"}, "questions": ["q1", "q2"], "answers": ["3"]}]), "answers"),
    "colorbench": (_write_parquet([{"idx": 0, "type": "Robustness", "task": "t", "image": _png(), "prompt": "p", "choices": ["x", "y"],
                                    "answer": "(A)"}]), "filename"),
    "babyvision": (_write_parquet([{"taskId": 1, "question": "q", "image": _png(), "ansType": "choice", "options": ["x"], "choiceAns": 3,
                                    "type": "t", "subtype": "s"}]), "choiceAns"),
}


def test_every_preset_has_a_malformed_case():
    assert set(MALFORMED) | {"hrbench_8k", "mme_realworld_lite", "mme_realworld_cn", "cvbench_3d"} == set(PRESETS)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_names_the_column_and_the_file(tmp_path, name):
    write, column = MALFORMED[name]
    folder = tmp_path / "bench"
    folder.mkdir()
    write(folder)
    with pytest.raises(BenchmarkError) as err:
        open_any(BenchmarkConfig(path=str(folder), preset=name))
    message = str(err.value)
    assert f"'{column}'" in message and str(folder) in message, message


def test_preset_config_mistakes():
    with pytest.raises(ConfigError, match="did you mean 'hrbench_4k'"):
        from_dict(BenchmarkConfig, {"preset": "hrbench4k"})
    with pytest.raises(ConfigError, match="no published copy"):  # found when the benchmark opens, before Ray starts
        open_any(from_dict(BenchmarkConfig, {"preset": "reference"}))
    with pytest.raises(ConfigError, match="distinct `name`"):
        from_dict(EvalConfig, {"suite": [{"preset": "vstar"}, {"preset": "vstar"}]})
    assert from_dict(EvalConfig, {"suite": [{"preset": "vstar"}, {"preset": "vstar", "name": "vstar-local", "path": "/x"}]})


def test_offline_hub_path_reads_the_local_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "datasets--DreamMr--HR-Bench" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "datasets--DreamMr--HR-Bench" / "refs").mkdir()
    (tmp_path / "hub" / "datasets--DreamMr--HR-Bench" / "refs" / "main").write_text("a" * 40)
    pd.DataFrame(_hrbench_rows(1)).to_csv(snapshot / "hr_bench_4k.tsv", sep="\t", index=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    bench = open_any(BenchmarkConfig(preset="hrbench_4k"))  # the preset's hf://datasets/DreamMr/HR-Bench
    assert len(_items(bench)) == 4 and bench.files[0].startswith(str(snapshot))
    with pytest.raises(BenchmarkError, match="no local copy"):
        open_any(BenchmarkConfig(preset="mmstar"))


def test_presets_read_fsspec_uris(tmp_path):
    """A remote copy (here fsspec's memory filesystem, as hf:// or s3:// would be) reads like a local one."""
    import fsspec

    fs = fsspec.filesystem("memory")
    _vstar_folders(tmp_path / "vstar")
    for local in sorted((tmp_path / "vstar").rglob("*.*")):
        fs.pipe(f"/remote/vstar/{local.relative_to(tmp_path / 'vstar')}", local.read_bytes())
    with fs.open("/remote/hr/hr_bench_4k.tsv", "w") as fh:
        pd.DataFrame(_hrbench_rows(1)).to_csv(fh, sep="\t", index=False)
    try:
        vstar = _items(_open("vstar", "memory://remote/vstar"))
        assert len(vstar) == 3 and vstar["image_size"].map(list).tolist() == [[32, 24]] * 3
        assert len(_items(_open("hrbench_4k", "memory://remote/hr"))) == 4
    finally:
        fs.rm("/remote", recursive=True)


def test_benchmark_configs_load():
    from zwz_ray.config import load_config

    folder = os.path.join(os.path.dirname(__file__), "..", "configs", "evaluate")
    presets = {load_config(EvalConfig, os.path.join(folder, f)).benchmark.preset for f in os.listdir(folder) if f.endswith(".yaml")}
    assert {"vstar", "hrbench_4k", "mme_realworld", "countqa"} <= presets
    suite = load_config(EvalConfig, os.path.join(folder, "suite.yaml"))
    assert len(suite.suite) >= 10


# --------------------------------------------------------------------------- the suite job on Ray


def test_suite_end_to_end(ray_session, tmp_path):
    from zwz_ray.eval.benchmarks.suite import run_suite

    pd.DataFrame(_hrbench_rows(1)).to_csv(tmp_path / "hr_bench_4k.tsv", sep="\t", index=False)
    zb = write_zoombench(str(tmp_path / "zb.parquet"), [{"id": i, "question": "How many?", "answer": "2", "image": _png(i),
                                                          "crop": _png(9), "bbox": [1, 1, 8, 8], "category": "count"} for i in range(2)])
    model = EngineConfig(model="tiny:qwen2_5_vl", device="cpu", dtype="float32", resources=ResourcesConfig(batch_size=8))
    cfg = EvalConfig(models=[model], inference=InferenceConfig(max_tokens=4), output=OutputConfig(dir=str(tmp_path / "out")),
                     suite=[BenchmarkConfig(path=str(tmp_path), preset="hrbench_4k"), BenchmarkConfig(path=zb, preset="zoombench")])
    result = run_suite(cfg)
    out = tmp_path / "out"
    assert list(result.summary.columns) == ["HR-Bench 4K", "ZoomBench", "ZoomBench (crop)", "mean"]
    assert list(result.summary.index) == ["tiny:qwen2_5_vl"] and result.summary.notna().all().all()
    run = result.runs["tiny:qwen2_5_vl"]
    assert run.requests == {"hrbench_4k": 4, "zoombench": 4} and run.failed == {"hrbench_4k": 0, "zoombench": 0}
    hr = json.loads((out / "hrbench_4k" / "metrics.json").read_text())
    assert set(hr["scores"]["tiny:qwen2_5_vl"]["global"]) >= {"single", "cross", "average", "headline"}
    assert len(pd.read_parquet(out / "zoombench" / "predictions" / "tiny_qwen2_5_vl.parquet")) == 4
    csv = pd.read_csv(out / "summary.csv", index_col="model")
    assert list(csv.columns) == list(result.summary.columns)
    report = (out / "report.md").read_text()
    assert "| model | HR-Bench 4K | ZoomBench | ZoomBench (crop) | mean |" in report and "single" in report
    assert os.path.getsize(out / "plots" / "summary.png") > 1000
    # the same suite from a config file through the evaluation entry point: it resumes, nothing is left to answer
    import yaml

    from pipelines.evaluate import main
    from zwz_ray.config import to_dict

    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["--config", str(tmp_path / "suite.yaml")]) == 0
    again = json.loads((out / "suite.json").read_text())
    assert again["runs"]["tiny:qwen2_5_vl"]["requests"] == {"hrbench_4k": 0, "zoombench": 0}
    assert pd.read_csv(out / "summary.csv", index_col="model").equals(csv)
    # one benchmark through the plain evaluation job: the preset's own scores land in metrics.json and report.md
    from zwz_ray.eval import run_eval

    single = run_eval(EvalConfig(benchmark=BenchmarkConfig(path=str(tmp_path), preset="hrbench_4k"), models=[model],
                                 inference=InferenceConfig(max_tokens=4), output=OutputConfig(dir=str(tmp_path / "single"))))
    own = single.metrics["scores"]["tiny:qwen2_5_vl"]["global"]
    assert own["average"] == pytest.approx(hr["scores"]["tiny:qwen2_5_vl"]["global"]["average"])  # same model, greedy
    assert "HR-Bench 4K: the benchmark's own scores" in (tmp_path / "single" / "report.md").read_text()


def test_config_preset_names_match_the_registry():
    from zwz_ray.eval.benchmarks import PRESETS
    from zwz_ray.eval.config import PRESET_NAMES

    assert tuple(sorted(PRESETS)) == PRESET_NAMES
