"""One rule for local paths and URIs (zwz_ray.uris)."""

from __future__ import annotations

import os

import pytest

from zwz_ray import uris


@pytest.mark.parametrize(
    ("path", "remote"),
    [("a/b", False), ("/a/b", False), ("~/x", False), ("file:///tmp/x", False), ("s3://b/k", True), ("memory://x", True), ("hf://datasets/a/b", True)],
)
def test_is_remote(path, remote):
    assert uris.is_remote(path) is remote


def test_absolute_expands_home_and_file_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert uris.absolute("x/y") == str(tmp_path / "x" / "y")
    assert uris.absolute("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert uris.absolute("file:///tmp/a/../b") == "/tmp/b"
    assert uris.absolute("s3://bucket/k") == "s3://bucket/k"
    assert uris.absolute("img.png", base="/data/bench") == "/data/bench/img.png"
    assert uris.absolute("img.png", base="s3://b/bench/") == "s3://b/bench/img.png"
    assert uris.absolute("") == ""


def test_join():
    assert uris.join("s3://b/root/", "kept", "0.parquet") == "s3://b/root/kept/0.parquet"
    assert uris.join("/tmp/root", "kept") == "/tmp/root/kept"
    assert uris.join("file:///tmp/root", "kept") == "/tmp/root/kept"


def test_atomic_write_local_and_memory(tmp_path):
    target = tmp_path / "deep" / "f.txt"
    uris.atomic_write(str(target), "one")
    uris.atomic_write(str(target), b"two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["f.txt"]  # no temp file left behind
    uris.atomic_write("memory://zwz-uris-test/a/b.txt", "remote")
    fs, inner = uris.filesystem("memory://zwz-uris-test/a/b.txt")
    assert fs.cat_file(inner) == b"remote"
    shown = uris.display(fs, inner)
    assert shown.startswith("memory://") and uris.filesystem(shown)[1] == inner
    lfs, linner = uris.filesystem(str(target))
    assert uris.display(lfs, linner) == str(target)
    assert uris.display(lfs, linner, like=f"file://{tmp_path}") == f"file://{target}"
    assert uris.display(fs, inner, like="file:///elsewhere") == shown  # a remote path keeps its own scheme
