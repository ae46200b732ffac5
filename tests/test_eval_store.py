"""Prediction files: crash-safe parts, consolidation, resume keys and answer fingerprints."""

from __future__ import annotations

import pandas as pd

from zwz_ray.config import EngineConfig
from zwz_ray.eval.config import InferenceConfig
from zwz_ray.eval.store import PREDICTION_COLUMNS, PredictionStore, answer_fingerprint, model_slug


def _rows(ids, view="global", rule="exact", fp="f1"):
    return pd.DataFrame([{c: None for c in PREDICTION_COLUMNS} | {"id": str(i), "view": view, "rule": rule, "fingerprint": fp,
                          "response": f"r{i}"} for i in ids], columns=PREDICTION_COLUMNS)


def test_parts_survive_a_crash_and_fold_into_one_file(tmp_path):
    store = PredictionStore(str(tmp_path))
    store.append_part("org/model-7b", _rows([1, 2]))
    store.append_part("org/model-7b", _rows([3], rule="error"))
    again = PredictionStore(str(tmp_path))  # a new run after a crash
    assert len(again.load("org/model-7b")) == 3
    assert again.done_keys("org/model-7b", "f1") == {"1\x1fglobal", "2\x1fglobal"}  # errors are retried
    path = again.save("org/model-7b", again.load("org/model-7b"))
    assert path.endswith("predictions/org_model-7b.parquet")
    assert not (tmp_path / "predictions" / ".parts").joinpath(model_slug("org/model-7b")).exists()
    assert pd.read_parquet(path)["id"].tolist() == ["1", "2", "3"]


def test_later_rows_replace_earlier_ones(tmp_path):
    store = PredictionStore(str(tmp_path))
    store.save("m", _rows([1, 2]))
    store.append_part("m", _rows([2], rule="normalized"))
    loaded = store.load("m")
    assert loaded.set_index("id").loc["2", "rule"] == "normalized" and len(loaded) == 2


def test_changed_settings_are_not_done(tmp_path):
    model = EngineConfig(model="tiny:qwen3_vl")
    fp = answer_fingerprint(model, InferenceConfig())
    assert fp == answer_fingerprint(EngineConfig(model="tiny:qwen3_vl", resources=model.resources), InferenceConfig(views=["global"]))
    assert fp != answer_fingerprint(model, InferenceConfig(max_tokens=999))
    assert fp != answer_fingerprint(EngineConfig(model="tiny:qwen2_5_vl"), InferenceConfig())
    store = PredictionStore(str(tmp_path))
    store.save("m", _rows([1], fp=fp))
    assert store.done_keys("m", fp) == {"1\x1fglobal"}
    assert store.done_keys("m", "other") == set()


def test_remote_output_dir_keeps_its_scheme():
    import uuid

    root = f"memory://zwz-store-{uuid.uuid4().hex}/eval"
    store = PredictionStore(root)
    store.append_part("m", _rows([1]))
    path = store.save("m", store.load("m"))
    assert path == f"{root}/predictions/m.parquet" and store.path("m") == path
    assert PredictionStore(root).load("m")["id"].tolist() == ["1"]
    assert not store.fs.exists(f"{root}/predictions/.parts/m")


def test_the_fingerprint_follows_the_model_content_not_its_path(tmp_path):
    """The distilled model always lands at <out>/distill/model: new weights there must not reuse old answers,
    the same weights written again (a rerun's export) must."""
    import os
    import shutil

    from zwz_ray.eval.store import model_identity

    model = tmp_path / "distill" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (model / "model.safetensors").write_bytes(b"weights-1" * 1000)
    fp = answer_fingerprint(EngineConfig(model=str(model)), InferenceConfig())
    assert model_identity(str(model)).startswith("sha256:")
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)  # the same bytes elsewhere: the same model
    assert answer_fingerprint(EngineConfig(model=str(copy)), InferenceConfig()) == fp
    (model / "model.safetensors").write_bytes(b"weights-1" * 1000)  # re-exported, same bytes, new mtime
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert answer_fingerprint(EngineConfig(model=str(model)), InferenceConfig()) == fp
    (model / "model.safetensors").write_bytes(b"weights-2" * 1000)  # re-distilled: other weights
    changed = answer_fingerprint(EngineConfig(model=str(model)), InferenceConfig())
    assert changed != fp
    store = PredictionStore(str(tmp_path / "eval"))
    store.save("distilled", _rows([1, 2], fp=fp))
    assert store.done_keys("distilled", changed) == set()  # every stored answer is stale


def test_remote_model_identity_follows_its_files():
    import uuid

    import fsspec

    from zwz_ray.eval.store import model_identity

    root = f"memory://zwz-model-{uuid.uuid4().hex}/model"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/model.safetensors", b"a" * 10)
    first = model_identity(root)
    fs.pipe(f"{root}/model.safetensors", b"b" * 11)
    assert first.startswith(root + "@") and model_identity(root) != first
    assert model_identity("tiny:qwen3_vl") == "tiny:qwen3_vl" and model_identity("Qwen/Qwen3-VL-8B-Instruct") == "Qwen/Qwen3-VL-8B-Instruct"
