"""Start-up checks: every path, URI and output location a job uses is checked before Ray starts.

A mistake found here is a :class:`~zwz_ray.config.ConfigError` naming the key and the problem (the
command line prints it as one ``config error: ...`` line and exits with status 2), so no Ray session,
actor or worker is ever started for a run that cannot succeed. Paths a job creates itself (an
``output.dir`` that does not exist yet, the chain's ``<out>/synth/kept``) only need a writable place
to be created in.

:class:`DataError` is the other deterministic failure: input that exists and parses but holds nothing
usable (every training row dropped). Only a worker can see it; it is reported once and never retried.
"""

from __future__ import annotations

import glob as _glob
import os
import typing
from typing import Any

import yaml

from zwz_ray import uris
from zwz_ray.config import BASE_KEY, ConfigError, parse_override

if typing.TYPE_CHECKING:
    from zwz_ray.eval.config import EvalConfig
    from zwz_ray.synth.config import SynthConfig
    from zwz_ray.train.config import DistillConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
LOCAL_MODEL_PREFIXES = ("/", "./", "../", "~", uris.FILE_SCHEME)


class DataError(ValueError):
    """Input data that cannot be used (e.g. no training row survives encoding): deterministic, never retried."""


# --------------------------------------------------------------------------- single checks


def _fs(key: str, path: str) -> tuple[Any, str]:
    try:
        return uris.filesystem(path)
    except (ValueError, ImportError) as exc:  # an fsspec protocol that is not installed or malformed
        raise ConfigError(f"{key}: cannot open {path!r}: {exc}") from None


def _exists(key: str, path: str) -> bool:
    fs, inner = _fs(key, path)
    try:
        return bool(fs.glob(inner)) if _glob.has_magic(inner) else fs.exists(inner)
    except Exception as exc:  # noqa: BLE001 - credentials, network: the job could not read it either
        raise ConfigError(f"{key}: cannot reach {path!r}: {type(exc).__name__}: {exc}") from None


def check_exists(key: str, path: str | None, what: str = "path") -> None:
    """``path`` (a local path, URI or glob) exists."""
    if not path:
        raise ConfigError(f"{key} is empty: give a {what}")
    if not _exists(key, path):
        raise ConfigError(f"{key}: {what} {path!r} does not exist")


def check_writable_dir(key: str, path: str) -> None:
    """``path`` is a folder the job can write into, or one it can create (its nearest existing parent is a
    writable folder). Remote locations are checked for the one mistake visible without writing: a file."""
    if uris.is_remote(path):
        fs, inner = _fs(key, path)
        try:
            is_file = fs.isfile(inner)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{key}: cannot reach {path!r}: {type(exc).__name__}: {exc}") from None
        if is_file:
            raise ConfigError(f"{key}: {path!r} is an existing file, not a folder")
        return
    local = os.path.abspath(uris.local_path(path))
    if os.path.exists(local) and not os.path.isdir(local):
        raise ConfigError(f"{key}: {local} is an existing file, not a folder")
    parent = local
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{key}: {local} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {local} is not writable ({parent} does not allow writing)")


def check_model(key: str, ref: str | None) -> None:
    """A model reference that names a local directory or a URI must exist; hub ids and tiny refs are not checked."""
    if not ref or ref.startswith("tiny:"):
        return
    if uris.is_remote(ref):
        check_exists(key, ref, "model")
    elif ref.startswith(LOCAL_MODEL_PREFIXES) and not os.path.isdir(uris.local_path(ref)):
        raise ConfigError(f"{key}: model directory {uris.absolute(ref)} does not exist")


def check_image_inputs(key: str, paths: list[str]) -> None:
    """Every entry of ``input.paths`` exists (a glob matches); a local folder holds at least one image."""
    for i, path in enumerate(paths):
        where = f"{key}[{i}]"
        check_exists(where, path, "image path")
        if uris.is_remote(path) or _glob.has_magic(path):
            continue  # listing a bucket is the job's first step; done once, there
        local = uris.local_path(path)
        if os.path.isdir(local) and not _holds_image(local):
            raise ConfigError(f"{where}: {local} holds no image ({', '.join(IMAGE_SUFFIXES)})")


def _holds_image(folder: str) -> bool:
    for _, _, files in os.walk(folder):  # stops at the first image
        if any(f.lower().endswith(IMAGE_SUFFIXES) for f in files):
            return True
    return False


# --------------------------------------------------------------------------- per job


def check_synthesis(cfg: SynthConfig, *, output: bool = True, prefix: str = "") -> None:
    """Images, models and output of a synthesis config (``output=False``: the caller owns the output folder;
    ``prefix``: where the section sits in the caller's config, e.g. ``synth.``)."""
    p = prefix
    if cfg.input.paths:
        check_image_inputs(f"{p}input.paths", cfg.input.paths)
    elif not cfg.input.demo_enabled:
        raise ConfigError(f"{p}input.paths is empty: give image folders, files, globs or URIs (or set {p}input.generate_demo)")
    if cfg.input.demo_enabled:
        check_writable_dir(f"{p}demo.dir", cfg.demo.dir)
    if cfg.questions.seed_file:
        check_exists(f"{p}questions.seed_file", cfg.questions.seed_file, "file")
    models = cfg.models
    check_model(f"{p}models.teacher.model", models.teacher.model)
    for i, engine in enumerate(models.answerers):
        check_model(f"{p}models.answerers[{i}].model", engine.model)
    if models.judge is not None:
        check_model(f"{p}models.judge.model", models.judge.model)
    if models.student is not None and cfg.difficulty.enabled:
        check_model(f"{p}models.student.model", models.student.model)
    if models.grounding.backend == "sam3":
        check_model(f"{p}models.grounding.model", models.grounding.model)
    if output:
        check_writable_dir(f"{p}output.dir", cfg.output.dir)


def check_distill(cfg: DistillConfig, *, data: bool = True) -> None:
    """Student, outputs and (``data=True``) that ``data.path`` exists; its rows are located by
    :func:`zwz_ray.train.data.locate_rows`."""
    check_model("student", cfg.student)
    if data:
        check_exists("data.path", cfg.data.path, "training data")
    check_writable_dir("output.dir", cfg.output.dir)
    check_writable_dir("checkpoint.storage_path", cfg.checkpoint.storage_path)


def check_eval(cfg: EvalConfig, *, models: bool = True, output: bool = True, prefix: str = "") -> None:
    """Benchmark, models (``models=False``: set later by the caller) and output of an evaluation config."""
    b, p = cfg.benchmark, prefix
    if b.generate_if_missing and not _exists(f"{p}benchmark.path", b.path):
        if not uris.is_remote(b.path):
            check_writable_dir(f"{p}benchmark.path", os.path.dirname(uris.local_path(b.path)) or ".")
    else:
        check_exists(f"{p}benchmark.path", b.path, "benchmark")
    if models:
        for i, engine in enumerate(cfg.models):
            check_model(f"{p}models[{i}].model", engine.model)
    if cfg.judge is not None:
        check_model(f"{p}judge.model", cfg.judge.model)
    if output:
        check_writable_dir(f"{p}output.dir", cfg.output.dir)


# --------------------------------------------------------------------------- what the user wrote


def written_keys(path: str | None, overrides: typing.Sequence[str] = ()) -> set[str]:
    """Dotted keys written in the config file itself (not those pulled in by ``_base_`` includes) and by
    ``--set``. Lists are leaves (``evaluate.models``); a ``--set`` key is taken as written."""
    keys: set[str] = set()
    if path:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        _collect(data, "", keys)
    for text in overrides:
        keys.add(parse_override(text)[0])
    return keys


def _collect(node: Any, prefix: str, keys: set[str]) -> None:
    if not isinstance(node, dict):
        keys.add(prefix.rstrip("."))
        return
    for key, value in node.items():
        if key != BASE_KEY:
            _collect(value, f"{prefix}{key}.", keys)
