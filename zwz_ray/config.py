"""Typed configuration for every zwz-ray job.

A job config is a tree of dataclasses. It is read from YAML (``--config FILE``) and then
patched by dotted overrides (``--set stages.consensus.threshold=0.5``). Unknown keys fail
with the key, the file and the closest valid key; values are type-checked and validated.

Job-specific sections live next to the code that uses them (``zwz_ray.synth.config``,
``zwz_ray.train.config``, ``zwz_ray.eval.config``); this module holds the machinery and
the sections every job shares (engines, Ray, resources).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

import yaml

KNOWN_SCHEMES = ("file", "local", "s3", "gs", "gcs", "az", "abfs", "abfss", "hf", "memory", "http", "https")


class ConfigError(ValueError):
    """A configuration mistake, reported before any work starts."""


# --------------------------------------------------------------------------- helpers for fields


def bounded(default: Any, lo: float | None = None, hi: float | None = None, *, doc: str = "") -> Any:
    """A numeric field whose value must lie in [lo, hi] (either end optional)."""
    return field(default=default, metadata={"range": (lo, hi), "doc": doc})


def listed(*items: Any) -> Any:
    """A list field with a default."""
    return field(default_factory=lambda: list(items))


def uri(default: str | None, *, doc: str = "") -> Any:
    """A local path or fsspec URI; the scheme is checked."""
    return field(default=default, metadata={"uri": True, "doc": doc})


def check_uri(value: str, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a path or URI, got {value!r}")
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in KNOWN_SCHEMES:
            raise ConfigError(f"{where}: unknown URI scheme {scheme!r} in {value!r} (known: {', '.join(KNOWN_SCHEMES)})")


# --------------------------------------------------------------------------- shared sections


@dataclass
class ResourcesConfig:
    """How a Ray Data stage is scheduled; lets the autoscaler size the cluster."""

    num_cpus: float = bounded(1.0, 0.0)
    num_gpus: float = bounded(0.0, 0.0)
    batch_size: int = bounded(8, 1)
    # Actor pool size for stateful (model) stages: min..max replicas. Ignored by stateless stages.
    min_replicas: int = bounded(1, 1)
    max_replicas: int = bounded(1, 1)

    def validate(self, where: str) -> None:
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"{where}.max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")


@dataclass
class EngineConfig:
    """One model behind the engine interface (``zwz_ray.engines``)."""

    backend: Literal["hf", "vllm", "openai"] = "hf"
    model: str = "tiny:qwen2_5_vl"
    name: str = ""  # label used in stats and provenance; defaults to the model reference
    # hf backend
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_batch_requests: int = bounded(8, 1)  # requests per generate() call
    # vllm backend
    tensor_parallel_size: int = bounded(1, 1)
    gpu_memory_utilization: float = bounded(0.85, 0.05, 1.0)
    max_model_len: int = bounded(8192, 128)
    kv_cache_memory_bytes: int | None = None
    enforce_eager: bool = False
    # openai backend
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable; the key is never stored
    served_model: str | None = None  # model name sent to the endpoint; defaults to `model`
    max_concurrency: int = bounded(16, 1)
    timeout_s: float = bounded(120.0, 1.0)
    max_retries: int = bounded(5, 0)
    # structured output: "auto" uses it when the backend can; "off" asks for free text
    structured_output: Literal["auto", "off"] = "auto"
    seed: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    @property
    def label(self) -> str:
        return self.name or self.model

    def validate(self, where: str) -> None:
        if self.backend == "openai" and not self.base_url:
            raise ConfigError(f"{where}.base_url is required when backend is 'openai'")
        if self.backend == "vllm" and self.resources.num_gpus == 0 and self.tensor_parallel_size > 1:
            raise ConfigError(f"{where}: tensor_parallel_size > 1 needs resources.num_gpus > 0")


@dataclass
class RayConfig:
    """Where the Ray runtime is. None means: RAY_ADDRESS if set, else a local instance."""

    address: str | None = None
    num_cpus: int | None = None  # only for a local instance
    log_to_driver: bool = True
    progress_bars: bool = True


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _closest(key: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where} in {source}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = _closest(str(value), [str(a) for a in allowed])
            raise ConfigError(f"{where} in {source}: {value!r} is not one of {list(allowed)}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} in {source}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} in {source}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, prefix=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} in {source}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} in {source}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} in {source}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{where} in {source}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where} in {source}: unsupported type {_type_name(tp)}")


def _check_field(f: dataclasses.Field, value: Any, where: str, source: str) -> None:
    lo, hi = f.metadata.get("range", (None, None))
    if value is not None and isinstance(value, (int, float)):
        if lo is not None and value < lo:
            raise ConfigError(f"{where} in {source}: {value} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{where} in {source}: {value} is above the maximum {hi}")
    if f.metadata.get("uri") and value is not None:
        check_uri(value, f"{where} in {source}")


def from_dict(cls: type, data: Any, *, source: str = "<defaults>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} in {source}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown key {where!r} in {source}{_closest(str(key), fields)}")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        value = _coerce(value, hints[name], where, source)
        _check_field(fields[name], value, where, source)
        kwargs[name] = value
    obj = cls(**kwargs)
    for name, f in fields.items():
        if name not in kwargs:
            _check_field(f, getattr(obj, name), f"{prefix}.{name}" if prefix else name, source)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate(prefix or cls.__name__)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (in {source})") from None
    return obj


def to_dict(obj: Any) -> Any:
    """A plain, YAML-safe copy of a config tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(part, dotted, len(node))]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(last, dotted, len(node))] = value
    else:
        node[last] = value


def _list_index(part: str, dotted: str, length: int) -> int:
    if not part.isdigit() or int(part) >= length:
        raise ConfigError(f"--set {dotted}: {part!r} is not a valid index into a list of {length}")
    return int(part)


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value) with the value read as a YAML scalar/list."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


BASE_KEY = "_base_"


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve_bases(data: Any, here: str, seen: tuple[str, ...] = ()) -> Any:
    """Expand ``_base_: other.yaml`` (relative to the including file) in any mapping: the mapping's
    own keys override the base file's, recursively."""
    if isinstance(data, list):
        return [_resolve_bases(v, here, seen) for v in data]
    if not isinstance(data, dict):
        return data
    data = {k: _resolve_bases(v, here, seen) for k, v in data.items()}
    if BASE_KEY not in data:
        return data
    ref = data.pop(BASE_KEY)
    path = os.path.normpath(os.path.join(os.path.dirname(here), str(ref)))
    if path in seen:
        raise ConfigError(f"{here}: {BASE_KEY} cycle through {path}")
    base = _resolve_bases(_read_yaml(path), path, (*seen, path))
    return _deep_merge(base, data)


def load_config(cls: type, path: str | None = None, overrides: typing.Sequence[str] = ()) -> Any:
    """Read ``path`` (YAML; ``_base_`` includes allowed) into ``cls``, apply ``key=value`` overrides, validate."""
    data: dict = {}
    source = "<defaults>"
    if path:
        source = str(path)
        data = _resolve_bases(_read_yaml(path), str(path), (os.path.normpath(str(path)),))
    if overrides:
        base = to_dict(from_dict(cls, data, source=source))
        for text in overrides:
            key, value = parse_override(text)
            _set_dotted(base, key, value)
        data = base
        source = f"{source} + --set"
    return from_dict(cls, data, source=source)


PATH_FIELDS = frozenset({"dir", "path", "paths", "storage_path", "seed_file"})


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    if isinstance(value, str) and value and "://" not in value and not value.startswith("~"):
        return os.path.abspath(value)
    return value


def absolutize_paths(cfg: Any) -> Any:
    """Resolve every relative local path in a config tree against the current directory, once, at
    start-up. A `ray job submit` driver runs in an unpacked working_dir that Ray may replace while
    the job runs, so nothing may depend on the current directory later."""
    if dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if f.name in PATH_FIELDS or f.metadata.get("uri"):
                setattr(cfg, f.name, _absolute(value))
            else:
                absolutize_paths(value)
    elif isinstance(cfg, list):
        for item in cfg:
            absolutize_paths(item)
    return cfg


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable), e.g. --set output.dir=/tmp/out")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def config_from_cli(cls: type, argv: typing.Sequence[str] | None = None, *, description: str = "", default_config: str | None = None) -> Any:
    """Parse ``--config/--set`` for an entry point; exits with a short message on a config error."""
    parser = argparse.ArgumentParser(description=description)
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(cls, args.config or default_config, args.set)
    except ConfigError as exc:
        parser.exit(2, f"config error: {exc}\n")
    absolutize_paths(cfg)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        parser.exit(0)
    return cfg
