"""Offline demo scenes: reproducible, high resolution, small labelled details."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from zwz_ray import demo
from zwz_ray.eval import writers
from zwz_ray.images import box_area_fraction, decode_image, probe_size, read_bytes

SMALL = (640, 512)  # for the benchmark fixture, where resolution is not under test


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scenes"))
    return out, demo.generate_scenes(out, n=2, seed=3)


def test_same_seed_same_bytes_and_high_resolution(scenes, tmp_path):
    out, paths = scenes
    again = demo.generate_scenes(str(tmp_path), n=2, seed=3)
    assert [os.path.basename(p) for p in paths] == ["scene_000.png", "scene_001.png"]
    for a, b in zip(paths, again):
        assert read_bytes(a) == read_bytes(b)
        w, h = probe_size(read_bytes(a))
        assert w > 1200 and h > 1200 and (w, h) == demo.DEFAULT_SIZE
    assert demo.load_manifest(out) == demo.load_manifest(str(tmp_path))
    assert read_bytes(paths[0]) != read_bytes(paths[1])
    other, _ = demo.render_scene(4, 0)
    first, _ = demo.render_scene(3, 0)
    assert other.tobytes() != first.tobytes()


def test_manifest_details_are_small_unique_and_inside(scenes):
    out, paths = scenes
    entries = demo.load_manifest(out)
    assert [e["image"] for e in entries] == [os.path.basename(p) for p in paths]
    for entry in entries:
        w, h, details = entry["width"], entry["height"], entry["details"]
        assert 5 <= len(details) <= 9
        assert len({d["name"] for d in details}) == len(details)
        assert len({d["question"] for d in details}) == len(details)
        for d in details:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert box_area_fraction(d["box"], w, h) < 0.01  # "well under" the 10% limit
            assert d["kind"] in ("colour", "text", "count", "shape")
            assert isinstance(d["answer"], str) and d["answer"]
            assert d["where"] in d["question"]


def test_details_are_really_drawn(scenes):
    out, paths = scenes
    entry = demo.load_manifest(out)[0]
    img = np.asarray(decode_image(read_bytes(paths[0]))).astype(int)
    for d in entry["details"]:
        x1, y1, x2, y2 = d["box"]
        crop = img[y1:y2, x1:x2]
        colour = {"colour": d["answer"], "shape": d["name"].split()[0],
                  "count": d["name"].split()[0]}.get(d["kind"])
        if colour is None:  # a sign: dark text inside the board's border
            assert (crop[3:-3, 3:-3].sum(axis=2) < 100).sum() > 20
            continue
        close = np.abs(crop - np.array(demo.COLOURS[colour])).max(axis=2) < 8
        assert close.sum() > 30, d


def test_ensure_demo_images_writes_once(tmp_path):
    out = str(tmp_path / "demo")
    size = (1210, 1205)
    paths = demo.ensure_demo_images(out, n=2, seed=1, size=size)
    stamps = [os.stat(p).st_mtime_ns for p in paths]
    assert demo.ensure_demo_images(out, n=2, seed=1, size=size) == paths
    assert [os.stat(p).st_mtime_ns for p in paths] == stamps
    os.remove(paths[1])  # incomplete -> written again, same bytes
    assert demo.ensure_demo_images(out, n=2, seed=1, size=size) == paths
    assert os.path.isfile(paths[1])
    demo.ensure_demo_images(out, n=1, seed=1, size=size)  # fewer scenes: no stale files
    assert sorted(os.listdir(out)) == ["scene_000.png", "scenes.jsonl"]


def test_benchmark_fixture_schema(tmp_path):
    path = writers.make_benchmark_fixture(str(tmp_path / "zoom.parquet"), n_items=6, seed=0,
                                          size=SMALL)
    table = pq.read_table(path)
    assert table.column_names == ["id", "query", "response", "image", "crop_image",
                                  "question_type", "bbox"]
    assert str(table.schema.field("image").type) == "struct<bytes: binary, path: string>"
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["image"] == {
        "_type": "Image"}
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == list(range(6))
    types = {"counting", "ocr", "color", "structure", "material", "object_identification"}
    assert {r["question_type"] for r in rows} <= types
    mcq = [r for r in rows if "(A)" in r["query"]]
    open_items = [r for r in rows if "(A)" not in r["query"]]
    assert mcq and open_items
    assert all(r["response"] in "ABCD" and len(r["response"]) == 1 for r in mcq)
    _, details = demo.render_scene(0, 0, SMALL)
    for row, d in zip(rows, details):
        assert row["bbox"] == d["box"] and row["query"].startswith(d["question"])
        if "(A)" in row["query"]:
            assert f"({row['response']}) {d['answer']}\n" in row["query"]
        else:
            assert row["response"] == d["answer"]
        assert decode_image(row["image"]["bytes"]).size == SMALL
        crop = decode_image(row["crop_image"]["bytes"])
        assert crop.width >= 2 * (d["box"][2] - d["box"][0])


def test_benchmark_fixture_cli_and_bad_size(tmp_path, capsys):
    writers.main([str(tmp_path / "b.parquet"), "--items", "2", "--width", "320", "--height", "256"])
    assert pq.read_table(tmp_path / "b.parquet").num_rows == 2
    assert "wrote 2 benchmark items" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_items"):
        writers.make_benchmark_fixture(str(tmp_path / "none.parquet"), n_items=0)


def test_cli_writes_scenes(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--n", "1", "--width", "1280", "--height", "1220"])
    assert probe_size(read_bytes(str(tmp_path / "scene_000.png"))) == (1280, 1220)
    assert len(demo.load_manifest(str(tmp_path))) == 1
    assert "wrote 1 scenes" in capsys.readouterr().out
