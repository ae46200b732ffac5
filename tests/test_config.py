"""Config machinery: YAML + dotted overrides, friendly errors, and every file in configs/ validates."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from zwz_ray.config import (
    ConfigError,
    EngineConfig,
    RayConfig,
    bounded,
    config_from_cli,
    from_dict,
    load_config,
    to_dict,
    uri,
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
    paths: list[str] = field(default_factory=list)
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
