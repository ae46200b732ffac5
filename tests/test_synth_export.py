"""Export of a synthesis output folder to EasyR1's and verl's parquet layouts, read back with pyarrow."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from zwz_ray.prompts import overlay_question
from zwz_ray.synth.columns import drops_table, output_table, to_table
from zwz_ray.synth.export import EASYR1_SCHEMA, VERL_SCHEMA, ExportError, export, main
from zwz_ray.synth.stages.s10_mcq import build_mcq
from zwz_ray.synth.store import OutputStore


def _png(seed: int) -> bytes:
    img = Image.new("RGB", (64, 48), (seed * 40 % 256, 90, 200))
    img.putpixel((seed % 48, seed % 48), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _rows(start: int, n: int) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        mcq = build_mcq(overlay_question(f"How many cups are on table {i}?"), str(i + 2), ["1", "9", "12"], seed=i)
        rows.append({"source": f"/img/{i}.jpg", "object_index": 0, "question_index": 0, "question": f"q{i}", "id": f"id{i}",
                     "image": _png(i), "problem": mcq.problem, "answer": mcq.answer_letter, "answer_text": str(i + 2),
                     "options": mcq.options, "bbox": [1, 2, 3, 4]})
    return rows


def _commit(store: OutputStore, rows: list[dict], with_manifest: bool = True) -> None:
    chunk = store.new_chunk_id()
    staged = store.staging_path(chunk)
    with store.fs.open(staged, "wb") as fh:
        pq.write_table(output_table(to_table(rows)), fh)
    if with_manifest:
        store.commit(chunk, staged, drops_table(to_table([])), {"sources": [r["source"] for r in rows], "config_hash": "h",
                                                                 "stats": {}})
    else:  # a killed run: the kept file reached kept/ but the manifest line was never written
        store.fs.makedirs(store.path("kept"), exist_ok=True)
        store.fs.mv(staged, store.path("kept", f"{chunk}.parquet"))


@pytest.fixture
def out_dir(tmp_path):
    store = OutputStore(str(tmp_path / "synth"))
    _commit(store, _rows(0, 3))
    _commit(store, _rows(3, 2))
    _commit(store, _rows(100, 4), with_manifest=False)
    return store.uri


def test_easyr1_layout_round_trips_the_image(out_dir, tmp_path):
    result = export(out_dir, str(tmp_path / "easyr1.parquet"), "easyr1")
    table = pq.read_table(tmp_path / "easyr1.parquet")
    assert (result.rows, result.chunks) == (5, 2)  # the uncommitted chunk is not exported
    assert table.schema.equals(EASYR1_SCHEMA) and table.column_names == ["images", "problem", "answer"]
    source = {r["answer_text"]: r for r in _rows(0, 5)}
    for row in table.to_pylist():
        original = next(r for r in source.values() if r["problem"] in row["problem"])
        assert row["problem"] == "<image>" + original["problem"] and row["answer"] == original["answer"]
        assert len(row["images"]) == 1 and row["images"][0]["bytes"] == original["image"]
        decoded = Image.open(io.BytesIO(row["images"][0]["bytes"]))
        assert decoded.tobytes() == Image.open(io.BytesIO(original["image"])).tobytes()
    assert "\n\nA. " in table["problem"][0].as_py() and set(table["answer"].to_pylist()) <= set("ABCD")


def test_verl_layout(out_dir, tmp_path):
    dest = tmp_path / "verl" / "train.parquet"
    export(out_dir, str(dest), "verl", data_source="r2i", ability="fine-grained perception")
    table = pq.read_table(dest)
    assert table.schema.equals(VERL_SCHEMA)
    rows = table.to_pylist()
    assert [r["extra_info"]["index"] for r in rows] == list(range(5))
    assert {r["extra_info"]["id"] for r in rows} == {f"id{i}" for i in range(5)}
    for row in rows:
        (turn,) = row["prompt"]
        assert turn["role"] == "user" and turn["content"].startswith("<image>") and turn["content"].count("<image>") == 1
        assert row["reward_model"] == {"style": "rule", "ground_truth": row["reward_model"]["ground_truth"]}
        letter = row["reward_model"]["ground_truth"]
        assert row["extra_info"]["options"]["ABCD".index(letter)] == row["extra_info"]["answer_text"]
        assert (row["data_source"], row["ability"], row["extra_info"]["split"]) == ("r2i", "fine-grained perception", "train")
        assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (64, 48)


def test_placeholder_can_be_left_out(out_dir, tmp_path):
    export(out_dir, str(tmp_path / "plain.parquet"), "easyr1", placeholder="")
    problems = pq.read_table(tmp_path / "plain.parquet")["problem"].to_pylist()
    assert sorted(problems) == sorted(r["problem"] for r in _rows(0, 5))


def test_remote_folders(tmp_path):
    store = OutputStore("memory:///zwz-export-test/synth")
    store.reset()
    _commit(store, _rows(0, 2))
    export(store.uri, "memory:///zwz-export-test/out/easyr1.parquet", "easyr1")
    with store.fs.open("/zwz-export-test/out/easyr1.parquet", "rb") as fh:
        assert pq.read_table(fh).num_rows == 2
    assert not store.fs.exists("/zwz-export-test/out/easyr1.parquet.partial")


def test_errors_are_clear(tmp_path, capsys):
    with pytest.raises(ExportError, match="no committed chunk"):
        export(str(tmp_path / "empty"), str(tmp_path / "x.parquet"))
    store = OutputStore(str(tmp_path / "nokept"))
    store.commit("c00000_x", None, drops_table(to_table([])), {"sources": ["a"], "config_hash": "h", "stats": {}})
    with pytest.raises(ExportError, match="no kept rows"):
        export(store.uri, str(tmp_path / "x.parquet"))
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "x.parquet.partial").exists()
    with pytest.raises(ExportError, match="unknown layout"):
        export(store.uri, str(tmp_path / "x.parquet"), "llava")
    assert main([str(tmp_path / "empty"), str(tmp_path / "x.parquet")]) == 2
    assert "no committed chunk" in capsys.readouterr().err


def test_cli(out_dir, tmp_path, capsys):
    assert main(["--layout", "verl", "--data-source", "zwz", out_dir, str(tmp_path / "v.parquet")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == 5 and printed["layout"] == "verl"
    assert pq.read_table(tmp_path / "v.parquet")["data_source"].to_pylist() == ["zwz"] * 5
    assert pa.types.is_list(pq.read_schema(tmp_path / "v.parquet").field("images").type)
