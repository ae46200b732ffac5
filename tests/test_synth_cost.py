"""The models' cost per kept row: GPUs from the config, stats divided by kept rows, the summary line."""

from __future__ import annotations

from pathlib import Path

from zwz_ray.config import load_config
from zwz_ray.synth.accounting import add_usage, compute_stats
from zwz_ray.synth.config import SynthConfig
from zwz_ray.synth.cost import cost_line, cost_per_kept_row, model_gpus, not_metered

LAPTOP = str(Path(__file__).resolve().parents[1] / "configs" / "synth" / "laptop.yaml")
STAGES = [("proposal", 0, 1), ("grounding", 1, 1), ("output", 1, 1)]
HF, API, SAM = "Qwen/Qwen2.5-VL-72B-Instruct", "gpt-teacher", "facebook/sam3"


def counts(calls: int, engine_s: float = 0.0, loads: int = 0) -> dict:
    return {
        "calls": calls,
        "samples": 2 * calls,
        "prompt_tokens": 1000 * calls,
        "completion_tokens": 100 * calls,
        "errors": 0,
        "engine_s": engine_s,
        "loads": loads,
    }


def rows(kept: int) -> list[dict]:
    """Image ``a``: 4 objects, the first ``kept`` kept, the others dropped at grounding; the usage of each stage call
    sits on its first row, as the stages book it."""
    usage = add_usage(None, "proposal", 1.0, {HF: counts(4, 6.0, 1), API: counts(2, 3.0)})
    usage = add_usage(usage, "grounding", 0.5, {SAM: {"calls": 1, "samples": 4}})
    out = []
    for i in range(4):
        dropped = i >= kept
        out.append(
            {
                "source": "a",
                "object_index": i,
                "question_index": -1,
                "n_objects": 4,
                "usage": usage if i == 0 else None,
                "drop_stage": "grounding" if dropped else None,
                "drop_reason": "no_box" if dropped else None,
            }
        )
    return out


def stats(kept: int) -> dict:
    return compute_stats(rows(kept), STAGES, ["a"])


def test_gpus_come_from_each_models_resources(tmp_path):
    cfg = load_config(
        SynthConfig,
        LAPTOP,
        [
            "models.teacher.model=big",
            "models.teacher.resources.num_gpus=4",
            "models.answerers=[{model: big, resources: {num_gpus: 4}}, {model: other, resources: {num_gpus: 0.5}}]",
            "models.judge.backend=openai",
            "models.judge.base_url=http://localhost:1/v1",
            "models.judge.model=api",
            "models.student.model=other",
            "models.student.resources.num_gpus=1",
        ],
    )
    # "other" is configured with two GPU counts and the stats cannot tell them apart: unknown
    assert model_gpus(cfg) == {"big": 4.0, "other": None, "api": None}
    assert not_metered(cfg) == {"tiny:sam3@5"}
    assert not_metered(load_config(SynthConfig, LAPTOP, ["models.grounding.backend=vlm"])) == set()


def test_per_kept_row_of_a_mixed_run():
    cost = cost_per_kept_row(stats(kept=2), {HF: 8.0, API: None}, {SAM})
    assert cost["kept_rows"] == 2
    hf, api, sam = (cost["models"][label] for label in (HF, API, SAM))
    assert hf["total"] == {"calls": 4, "samples": 8, "prompt_tokens": 4000, "generated_tokens": 400, "engine_s": 6.0, "gpu_s": 48.0}
    assert hf["per_kept_row"] == {
        "calls": 2.0,
        "samples": 4.0,
        "prompt_tokens": 2000.0,
        "generated_tokens": 200.0,
        "engine_s": 3.0,
        "gpu_s": 24.0,
    }
    assert (hf["loads"], hf["gpus_per_replica"], hf["metered"]) == (1, 8.0, True)
    # an endpoint: its seconds are reported, its GPUs are not known
    assert (api["per_kept_row"]["engine_s"], api["per_kept_row"]["gpu_s"], api["total"]["gpu_s"]) == (1.5, None, None)
    # SAM3: forward passes, no tokens or seconds, not in the sums over models
    assert sam["metered"] is False and sam["per_kept_row"]["calls"] == 0.5
    assert sam["per_kept_row"]["prompt_tokens"] is sam["per_kept_row"]["engine_s"] is sam["per_kept_row"]["gpu_s"] is None
    every = cost["all_models"]
    assert every["total"] == {"calls": 6, "samples": 12, "prompt_tokens": 6000, "generated_tokens": 600, "engine_s": 9.0, "gpu_s": 48.0}
    assert every["per_kept_row"]["calls"] == 3.0 and every["per_kept_row"]["gpu_s"] == 24.0
    assert every["gpu_s_leaves_out"] == [API] and isinstance(cost_per_kept_row(stats(1), {HF: 0})["all_models"]["total"]["gpu_s"], float)
    line = cost_line(cost)
    assert line == (
        f"model cost per kept row: 3.0 calls, 3.0k prompt tokens, 300.0 generated tokens, 4.5 engine-s, 24.0 GPU-s (GPUs unknown for {API})"
    )


def test_no_kept_row_gives_totals_and_null_per_row_values():
    cost = cost_per_kept_row(stats(kept=0), {HF: 8.0, API: None}, {SAM})
    assert cost["kept_rows"] == 0 and cost["models"][HF]["total"]["gpu_s"] == 48.0
    for entry in (*cost["models"].values(), cost["all_models"]):
        assert set(entry["per_kept_row"].values()) == {None}
    assert cost_line(cost).startswith("model cost (no kept row to divide by): 6.0 calls, 6.0k prompt tokens")


def test_endpoint_models_only_have_no_gpu_seconds_at_all():
    cost = cost_per_kept_row(stats(kept=1), {})  # no label in the config (e.g. renamed since): GPUs unknown
    assert cost["all_models"]["total"]["gpu_s"] is None and cost["all_models"]["total"]["engine_s"] == 9.0
    assert cost["models"][SAM]["metered"] is True  # without the config's word, SAM3 is just a model with no tokens
    assert cost_line(cost).endswith("9.0 engine-s, GPU-s unknown")
    assert cost_line(cost_per_kept_row({"kept_rows": 0, "models": {}}, {})) is None  # nothing ran: no line
