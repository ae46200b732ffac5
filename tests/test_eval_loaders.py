"""Benchmark loaders: ZoomBench parquet, generic JSON / JSONL / parquet, and friendly schema errors."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from zwz_ray.eval.config import BenchmarkConfig
from zwz_ray.eval.items import explode_views
from zwz_ray.eval.loaders import BenchmarkError, open_benchmark
from zwz_ray.eval.writers import write_zoombench


def _png(size=(40, 30), colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _items(path: str, **kwargs) -> pd.DataFrame:
    bench = open_benchmark(BenchmarkConfig(path=path, **kwargs))
    return pd.concat(list(bench.iter_items(batch_size=2)), ignore_index=True)


def test_zoombench_layout(tmp_path):
    rows = [{"id": 7, "question": "What colour?\n(A) red\n(B) blue", "answer": "A", "image": _png(), "crop": _png((10, 10)),
             "bbox": [1, 2, 11, 12], "category": "color"},
            {"id": 8, "question": "How many?", "answer": "3", "image": _png(), "crop": None, "bbox": None, "category": None}]
    path = write_zoombench(str(tmp_path / "zb.parquet"), rows)
    bench = open_benchmark(BenchmarkConfig(path=str(tmp_path)))  # a folder works too
    assert bench.format == "zoombench" and bench.columns["question"] == "query"
    items = _items(path)
    assert items["id"].tolist() == ["7", "8"]
    assert items["is_mcq"].tolist() == [True, False]
    assert items["options"][0] == ["red", "blue"] and items["image_size"][0] == [40, 30]
    assert items["bbox"][0] == [1.0, 2.0, 11.0, 12.0] and items["bbox"][1] is None
    views = explode_views(items, ["global", "regional"])
    assert views[["id", "view"]].values.tolist() == [["7", "global"], ["7", "regional"], ["8", "global"]]
    assert views["bbox"][1] is None  # the box belongs to the full image only


def test_zoombench_format_reads_the_hub_column_names(tmp_path):
    # the hub copy names question / answer prompt / answer instead of query / response
    table = pa.table({"id": [1, 2], "prompt": ["What colour?\n(A) red\n(B) blue", "How many?"], "answer": ["A", "3"],
                      "image": [_png(), _png()], "crop_image": [_png((10, 10)), _png((10, 10))]})
    pq.write_table(table, tmp_path / "zb.parquet")
    for fmt in ("zoombench", "auto"):
        bench = open_benchmark(BenchmarkConfig(path=str(tmp_path / "zb.parquet"), format=fmt))
        assert (bench.columns["question"], bench.columns["answer"]) == ("prompt", "answer")
        items = _items(str(tmp_path / "zb.parquet"), format=fmt)
        assert items["question"].tolist()[1] == "How many?" and items["answer"].tolist() == ["A", "3"]
        assert items["crop"][0] is not None and items["is_mcq"].tolist() == [True, False]


def test_generic_jsonl_with_relative_paths_and_options(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png())
    (tmp_path / "img" / "a_crop.png").write_bytes(_png((8, 8)))
    rows = [{"question_id": "v1", "question": "Which animal?", "answer": "B", "image": "img/a.png", "crop": "img/a_crop.png",
             "options": ["dog", "cat"], "category": "direct_attributes", "bbox": [0, 0, 5, 5]},
            {"question_id": "v2", "question": "Which colour?", "answer": "cat", "image": "img/a.png", "options": "A. dog\nB. cat"}]
    path = tmp_path / "vstar.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = _items(str(path), bbox_format="xywh")
    assert items["id"].tolist() == ["v1", "v2"]
    assert items["crop"][0] is not None and items["crop"][1] is None
    assert items["options"].tolist() == [["dog", "cat"], ["dog", "cat"]]
    assert items["is_mcq"].tolist() == [True, True]  # "cat" is the text of option B
    assert items["bbox"][0] == [0.0, 0.0, 5.0, 5.0]


def test_generic_json_column_mapping_and_letter_columns(tmp_path):
    (tmp_path / "x.png").write_bytes(_png())
    rows = [{"idx": 1, "prompt_text": "How many?", "gt": "A", "picture": "x.png", "A": "4", "B": "5", "C": "6", "D": "7",
             "cat": "count"}]
    path = tmp_path / "hr.json"
    path.write_text(json.dumps(rows))
    cols = {"question": "prompt_text", "answer": "gt", "image": "picture", "category": "cat"}
    items = _items(str(path), columns=cols)
    assert items["options"][0] == ["4", "5", "6", "7"]
    assert items["category"][0] == "count" and items["is_mcq"][0]


def test_unreadable_image_is_kept_with_an_error(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "image": "missing.png"}))
    items = _items(str(path))
    assert items["image"][0] is None and items["image_error"][0].startswith("not_found")
    assert items["id"][0] == "0"  # no id column: the row number


# --------------------------------------------------------------------------- malformed files


def test_missing_required_column_is_named(tmp_path):
    table = pa.table({"id": [1], "query": ["q"], "image": [b"x"]})
    pq.write_table(table, tmp_path / "zb.parquet")
    with pytest.raises(BenchmarkError, match=r"'answer'.*zb\.parquet|zb\.parquet.*'answer'"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "zb.parquet")))


def test_zoombench_missing_response_names_the_column(tmp_path):
    pq.write_table(pa.table({"id": [1], "query": ["q"], "image": [b"x"], "crop_image": [b"y"]}), tmp_path / "zb.parquet")
    with pytest.raises(BenchmarkError, match=r"zb\.parquet.*'response'") as err:
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "zb.parquet"), format="zoombench"))
    assert "benchmark.columns.answer" in str(err.value)


def test_remote_and_file_uri_benchmarks_resolve_relative_images_against_their_folder(tmp_path):
    import uuid

    import fsspec

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png((12, 10)))
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q", "answer": "a", "image": "img/a.png"}))
    memory, inner = fsspec.filesystem("memory"), f"/zwz-bench-{uuid.uuid4().hex}"
    memory.put(f"{tmp_path}/", inner, recursive=True)
    try:
        for where in (f"memory://{inner}", f"file://{tmp_path}"):  # listed files keep the form of the path
            bench = open_benchmark(BenchmarkConfig(path=f"{where}/q.jsonl"))
            assert bench.files == [f"{where}/q.jsonl"] and bench.base_dir == where
            (item,) = _items(f"{where}/q.jsonl").to_dict("records")
            assert item["image_error"] is None and list(item["image_size"]) == [12, 10]
    finally:
        memory.rm(inner, recursive=True)


def test_zoombench_writer_writes_remote_files(tmp_path):
    import uuid

    root = f"memory:///zwz-bench-{uuid.uuid4().hex}"
    path = write_zoombench(f"{root}/zb.parquet", [{"id": 3, "question": "q", "answer": "a", "image": _png(), "bbox": [1, 2, 3, 4]}])
    assert path == f"{root}/zb.parquet"
    (item,) = _items(path).to_dict("records")
    assert item["id"] == "3" and list(item["bbox"]) == [1.0, 2.0, 3.0, 4.0]


def test_wrong_column_type_is_named(tmp_path):
    pq.write_table(pa.table({"id": [1], "query": ["q"], "response": ["a"], "image": [123]}), tmp_path / "zb.parquet")
    with pytest.raises(BenchmarkError, match=r"zb\.parquet: column 'image' .*type number"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "zb.parquet")))


def test_wrong_type_in_a_json_row_names_row_and_column(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "image": "x.png"}) + "\n" +
                    json.dumps({"question": ["not", "text"], "answer": "a", "image": "x.png"}))
    with pytest.raises(BenchmarkError, match=r"b\.jsonl row 1: column 'question'"):
        open_benchmark(BenchmarkConfig(path=str(path)))


def test_unreadable_file(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(BenchmarkError, match=r"cannot read benchmark file .*bad\.parquet"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "bad.parquet")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchmarkError, match=r"bad\.json as JSON"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "bad.json")))


def test_missing_path_and_unknown_override(tmp_path):
    with pytest.raises(BenchmarkError, match="not found"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "nope.parquet")))
    write_zoombench(str(tmp_path / "zb.parquet"), [{"id": 1, "question": "q", "answer": "a", "image": _png()}])
    with pytest.raises(BenchmarkError, match=r"column 'dimension' \(the 'category' field"):
        open_benchmark(BenchmarkConfig(path=str(tmp_path / "zb.parquet"), columns={"category": "dimension"}))


def test_limit(tmp_path):
    rows = [{"id": i, "question": "q", "answer": "a", "image": _png()} for i in range(5)]
    path = write_zoombench(str(tmp_path / "zb.parquet"), rows)
    assert len(_items(path, limit=3)) == 3


def test_repeated_ids_are_refused(tmp_path):
    rows = [{"id": 1, "question": "q", "answer": "a", "image": _png()}] * 2
    path = write_zoombench(str(tmp_path / "zb.parquet"), rows)
    with pytest.raises(BenchmarkError, match=r"column 'id' .*repeated values"):
        open_benchmark(BenchmarkConfig(path=path))
