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
