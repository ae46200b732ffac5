"""Config machinery: YAML + dotted overrides, friendly errors, and every file in configs/ validates."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from zwz_ray.cli import config_from_cli, explain
from zwz_ray.config import (
    ConfigError,
    EngineConfig,
    RayConfig,
    bounded,
    from_dict,
    load_config,
    model_ref,
    resolve_paths,
    section,
    setting,
    to_dict,
    uri,
    uri_list,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Consensus:
    threshold: float = bounded(0.75, 0.0, 1.0)
    use_judge: bool = True


@dataclass
class Output:
    dir: str = uri("outputs/x")


@dataclass
class Job:
    name: str = "job"
    mode: Literal["sft", "grpo"] = "sft"
    steps: int = bounded(10, 1)
    paths: list[str] = uri_list()
    consensus: Consensus = field(default_factory=Consensus)
    output: Output = field(default_factory=Output)
    teachers: list[EngineConfig] = field(default_factory=lambda: [EngineConfig()])
    ray: RayConfig = field(default_factory=RayConfig)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "mode: grpo\nsteps: 5\nconsensus:\n  threshold: 0.5\npaths: [a, b]\n")
    cfg = load_config(Job, path, ["consensus.use_judge=false", "steps=7", "teachers.0.model=tiny:qwen3_vl", "output.dir=s3://bucket/out"])
    assert cfg.mode == "grpo" and cfg.steps == 7 and cfg.paths == ["a", "b"]
    assert cfg.consensus.threshold == 0.5 and cfg.consensus.use_judge is False
    assert cfg.teachers[0].model == "tiny:qwen3_vl" and cfg.output.dir == "s3://bucket/out"
    assert to_dict(cfg)["consensus"] == {"threshold": 0.5, "use_judge": False}


def test_misspelt_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "consensus:\n  treshold: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(Job, path)
    msg = str(err.value)
    assert "consensus.treshold" in msg and path in msg and "did you mean 'threshold'" in msg


def test_exponent_floats_without_a_dot():
    cfg = load_config(Job, None, ["consensus.threshold=1e-5"])
    assert cfg.consensus.threshold == 1e-5
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Job, None, ["consensus.threshold=high"])


def test_misspelt_override_is_caught():
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(Job, None, ["stpes=3"])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("steps: 0\n", "below the minimum 1"),
        ("steps: many\n", "expected an integer"),
        ("consensus:\n  threshold: 1.5\n", "above the maximum 1.0"),
        ("mode: gpro\n", "did you mean 'grpo'"),
        ("paths: a\n", "expected a list"),
        ("output:\n  dir: ftp2://x/y\n", "unknown URI scheme"),
        ("teachers:\n  - backend: openai\n", "base_url is required"),
        ("teachers:\n  - resources:\n      min_replicas: 3\n      max_replicas: 2\n", "max_replicas"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("steps: [\n", "not valid YAML"),
    ],
)
def test_bad_values_give_clear_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(Job, write(tmp_path, text))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Job, "/nonexistent/job.yaml")


def test_from_dict_defaults_are_valid():
    cfg = from_dict(Job, {})
    assert cfg.consensus.threshold == 0.75 and cfg.teachers[0].backend == "hf"


def test_cli_exits_with_message(tmp_path, capsys):
    path = write(tmp_path, "stepz: 3\n")
    with pytest.raises(SystemExit) as exc:
        config_from_cli(Job, ["--config", path])
    assert exc.value.code == 2
    assert "did you mean 'steps'" in capsys.readouterr().err


def _config_files():
    return sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.is_file())


def test_there_are_config_files():
    assert _config_files(), "configs/ holds no YAML files"


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_validates(path):
    """Each YAML starts with the command that runs it; that job's config class accepts the file."""
    first = path.read_text().splitlines()[0]
    match = re.search(r"python -m pipelines\.(\w+) --config (\S+)", first)
    assert match, f"{path}: the first line must be a comment with the command that runs it"
    assert (ROOT / match.group(2)).resolve() == path.resolve(), f"{path}: the command names {match.group(2)}"
    job = importlib.import_module(f"pipelines.{match.group(1)}")
    cfg = load_config(job.CONFIG_CLASS, str(path))
    assert to_dict(cfg)


def test_base_includes_merge_and_report_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 3\nconsensus:\n  threshold: 0.5\n  use_judge: false\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "job.yaml").write_text("_base_: ../base.yaml\nconsensus:\n  threshold: 0.9\n")
    cfg = load_config(Job, str(sub / "job.yaml"))
    assert cfg.steps == 3 and cfg.consensus.threshold == 0.9 and cfg.consensus.use_judge is False
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Job, str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("consensus:\n  _base_: missing.yaml\n")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Job, str(tmp_path / "c.yaml"))


def test_entry_points_resolve_relative_paths_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_cli(Job, ["--set", "paths=[imgs, s3://bucket/x]", "--set", "output.dir=out"])
    assert cfg.paths == [str(tmp_path / "imgs"), "s3://bucket/x"]
    assert cfg.output.dir == str(tmp_path / "out")
    assert cfg.teachers[0].model == "tiny:qwen2_5_vl"


# --------------------------------------------------------------------------- paths, by their marker only


@dataclass
class Marked:
    dir: str = setting("not/a/path", doc="named like a path but not marked: left alone")
    output: str = uri("out", doc="a marked path")
    seeds: str | None = uri(None, doc="an unset marked path")
    model: str = model_ref("tiny:qwen2_5_vl", doc="a model reference")
    models: list[EngineConfig] = section(lambda: [EngineConfig(model="Qwen/Qwen3-VL-8B-Instruct"), EngineConfig(model="./ckpt")])


def test_only_marked_fields_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Qwen" / "local-export").mkdir(parents=True)
    cfg = load_config(Marked, None, ["output=~/x", "model=Qwen/local-export"])
    resolved = resolve_paths(cfg)
    assert resolved.dir == "not/a/path" and resolved.seeds is None
    assert resolved.output == os.path.expanduser("~/x")
    assert resolved.model == str(tmp_path / "Qwen" / "local-export")  # an existing local directory
    assert [m.model for m in resolved.models] == ["Qwen/Qwen3-VL-8B-Instruct", str(tmp_path / "ckpt")]
    assert resolve_paths(load_config(Marked, None, ["model=file:///models/x", "output=s3://b/o"])).model == "/models/x"
    assert resolve_paths(load_config(Marked, None, ["output=s3://b/o"])).output == "s3://b/o"
    assert cfg.output == "~/x"  # the input is not changed


def test_job_configs_mark_their_paths():
    from zwz_ray.chain import R2IConfig

    marked = {key for key, value in _leaves(R2IConfig()) if value.metadata.get("uri")}
    assert {"output.dir", "synth.input.paths", "synth.demo.dir", "synth.questions.seed_file", "synth.output.dir",
            "distill.data.path", "distill.checkpoint.storage_path", "distill.output.dir", "evaluate.benchmark.path",
            "evaluate.output.dir"} <= marked
    models = {key for key, value in _leaves(R2IConfig()) if value.metadata.get("model")}
    assert {"distill.student", "synth.models.teacher.model", "synth.models.grounding.model", "evaluate.models.0.model"} <= models


# --------------------------------------------------------------------------- field help


def _leaves(node, prefix=""):
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield f"{prefix}{f.name}", f
            yield from _leaves(value, f"{prefix}{f.name}.")
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            yield f"{prefix}{f.name}", f
            for i, item in enumerate(value):
                yield from _leaves(item, f"{prefix}{f.name}.{i}.")
        else:
            yield f"{prefix}{f.name}", f


def _job_classes():
    return [importlib.import_module(f"pipelines.{job}").CONFIG_CLASS for job in ("synthesize", "distill", "evaluate", "r2i")]


@pytest.mark.parametrize("cls", _job_classes(), ids=lambda c: c.__name__)
def test_every_key_has_a_meaning(cls):
    undocumented = [key for key, f in _leaves(cls()) if not f.metadata.get("doc")]
    assert not undocumented, f"{cls.__name__}: keys without doc=: {undocumented}"


def test_explain_lists_every_key_with_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as exc:
        config_from_cli(Job, ["--set", "steps=3", "--set", "consensus.threshold=0.5", "--explain"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert re.search(r"^steps\s+3 \(default: 10\)", lines["steps"])
    assert "(default: 0.75)" in lines["consensus.threshold"] and "consensus.use_judge" in lines
    assert "teachers.0.backend" in lines and "hf (transformers), vllm or openai" in lines["teachers.0.backend"]
    assert "the student: HF id" in explain(importlib.import_module("pipelines.distill").CONFIG_CLASS())


def test_distill_explain_through_the_entry_point():
    out = subprocess.run([sys.executable, "-m", "pipelines.distill", "--explain", "--set", "optim.lr=0.01"], cwd=ROOT,
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    lr = next(line for line in out.splitlines() if line.startswith("optim.lr "))
    assert "0.01 (default: 1e-05)" in lr and "peak learning rate" in lr


# --------------------------------------------------------------------------- entry points


@pytest.mark.parametrize("job, folder", [("synthesize", "synth"), ("distill", "distill"), ("evaluate", "evaluate"), ("r2i", "r2i")])
def test_every_job_defaults_to_its_laptop_config(job, folder, capsys):
    module = importlib.import_module(f"pipelines.{job}")
    default = ROOT / "configs" / folder / "laptop.yaml"
    assert module.JOB.default_config == str(default)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert f"configs/{folder}/laptop.yaml" in " ".join(capsys.readouterr().out.split())
    printed = []
    for argv in (["--print-config"], ["--config", str(default), "--print-config"]):
        with pytest.raises(SystemExit):
            module.main(argv)
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and printed[0].strip()


def test_job_entry_points_are_light_to_import():
    """The facades and entry points name config classes and run functions; torch, transformers and Ray Train
    load only when a job runs (``--help`` and ``--print-config`` stay fast)."""
    code = ("import sys, json; import zwz_ray.train, zwz_ray.eval, zwz_ray.synth, pipelines.distill, pipelines.synthesize; "
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'ray.train', 'vllm') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert json.loads(out.splitlines()[-1]) == []


def test_a_bare_off_in_yaml_is_the_off_choice(tmp_path):
    # YAML 1.1 reads `early_stop: off` as false; a choice list that holds "off" takes it as that choice
    from zwz_ray.synth.config import SynthConfig

    path = tmp_path / "c.yaml"
    path.write_text("consensus:\n  early_stop: off\n")
    assert load_config(SynthConfig, str(path)).consensus.early_stop == "off"
    with pytest.raises(ConfigError, match="not one of"):
        load_config(SynthConfig, str(path), ["consensus.early_stop=true"])  # no "on" choice: still an error
