"""The whole chain (synthesis -> distillation -> evaluation -> report) with tiny models and real Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zwz_ray.chain import BASE_LABEL, DISTILLED_LABEL, R2IConfig, eval_config, job_configs
from zwz_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
LAPTOP = str(ROOT / "configs" / "r2i" / "laptop.yaml")


def small_chain(out_dir: Path, *extra: str) -> R2IConfig:
    return load_config(R2IConfig, LAPTOP, [
        f"output.dir={out_dir}",
        f"synth.demo.dir={out_dir / 'demo_images'}",
        "distill.trainer.max_steps=2",
        "distill.trainer.num_workers=1",
        f"evaluate.benchmark.path={out_dir / 'bench.parquet'}",
        "evaluate.benchmark.fixture_items=4",
        "evaluate.coverage.max_items=2",
        "evaluate.coverage.heatmaps=1",
        *extra,
    ])


def test_chain_wires_outputs_and_models(tmp_path):
    cfg = small_chain(tmp_path)
    synth, distill = job_configs(cfg)
    assert synth.output.dir == f"{tmp_path}/synth"
    assert distill.data.path == f"{tmp_path}/synth"  # the synthesis output folder: its committed kept rows
    assert distill.output.dir == f"{tmp_path}/distill" and distill.checkpoint.storage_path == f"{tmp_path}/distill/runs"
    ev = eval_config(cfg, "/models/export")
    assert [m.label for m in ev.models] == [BASE_LABEL, DISTILLED_LABEL]
    assert ev.models[0].model == cfg.distill.student and ev.models[1].model == "/models/export"
    assert ev.output.dir == f"{tmp_path}/eval"


def test_the_config_as_run_is_the_one_recorded_and_owned_keys_must_agree(tmp_path):
    from zwz_ray.preflight import written_keys

    cfg = small_chain(tmp_path)
    ran = cfg.as_run()
    assert ran.as_run() == ran  # idempotent: the CLI and run_r2i may both apply it
    assert ran.synth.output.dir == f"{tmp_path}/synth" and ran.evaluate.output.dir == f"{tmp_path}/eval"
    assert ran.synth.ray == ran.distill.ray == ran.evaluate.ray == cfg.ray
    assert ran.evaluate.models[1].model == f"{tmp_path}/distill/model"
    # the synth section's _base_ file sets its own output.dir: replaced silently (the chain's file does not write it)
    written = written_keys(LAPTOP, [f"output.dir={tmp_path}", "distill.trainer.max_steps=2"])
    assert "synth.output.dir" not in written and {"output.dir", "evaluate.models", "distill.trainer.max_steps"} <= written
    cfg.as_run(written)
    agreeing = load_config(R2IConfig, LAPTOP, [f"output.dir={tmp_path}", f"synth.output.dir={tmp_path}/synth"])
    agreeing.as_run({"synth.output.dir"})
    for key, value in (("synth.output.dir", "/elsewhere"), ("evaluate.output.dir", "/elsewhere"),
                       ("distill.checkpoint.storage_path", "/elsewhere"), ("evaluate.ray.num_cpus", 1)):
        given = load_config(R2IConfig, LAPTOP, [f"output.dir={tmp_path}", f"{key}={value}"])
        with pytest.raises(ConfigError, match=rf"{key}: the chain sets it"):
            given.as_run({key})
    two = load_config(R2IConfig, LAPTOP, [f"output.dir={tmp_path}", "evaluate.models=[{model: a}, {model: b}]"])
    with pytest.raises(ConfigError, match="evaluate.models: .* give one, not 2"):
        two.as_run({"evaluate.models"})


def test_print_config_shows_the_folders_that_run(tmp_path, capsys):
    import yaml

    from pipelines.r2i import main

    with pytest.raises(SystemExit):
        main(["--set", f"output.dir={tmp_path}", "--print-config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["synth"]["output"]["dir"] == f"{tmp_path}/synth"
    assert printed["distill"]["data"]["path"] == f"{tmp_path}/synth"
    assert [m["name"] for m in printed["evaluate"]["models"]] == [BASE_LABEL, DISTILLED_LABEL]


@pytest.mark.slow
def test_chain_end_to_end(ray_session, tmp_path):
    from zwz_ray.chain import run_r2i

    result = run_r2i(small_chain(tmp_path))
    summary = json.loads((tmp_path / "r2i_summary.json").read_text())
    assert summary["synthesis"]["kept_rows"] > 0
    ran = summary["config"]  # the config that ran: the job folders the chain set
    assert ran["synth"]["output"]["dir"] == f"{tmp_path}/synth" and ran["evaluate"]["output"]["dir"] == f"{tmp_path}/eval"
    assert ran["evaluate"]["models"][1]["model"] == summary["distillation"]["export_dir"]
    assert summary["distillation"]["steps"] == 2 and len(summary["distillation"]["history"]) == 2
    models = summary["evaluation"]["models"]
    assert set(models) == {BASE_LABEL, DISTILLED_LABEL}
    for m in models.values():
        assert {"global", "regional"} <= set(m["views"])
    report = Path(result.report_path).read_text()
    for section in ("## Data synthesis", "## Distillation", "## Evaluation: base vs distilled student"):
        assert section in report
    assert "| model | calls | prompt tokens | generated tokens | GPU-s | loads |" in report
    assert f"Model cost per kept row ({summary['synthesis']['kept_rows']} kept rows;" in report
    for plot in ("training.png", "before_after.png"):
        data = (tmp_path / "plots" / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
