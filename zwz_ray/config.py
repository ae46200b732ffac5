"""Typed configuration for every zwz-ray job.

A job config is a tree of dataclasses, read from YAML (``--config FILE``) and patched by dotted overrides
(``--set consensus.threshold=0.5``). Unknown keys fail with the key, the file and the closest valid key;
values are type-checked and validated. Job-specific sections live next to the code that uses them
(``zwz_ray.{synth,train,eval}.config``); this module holds the machinery and the shared sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from zwz_ray import uris

KNOWN_SCHEMES = ("file", "local", "s3", "gs", "gcs", "az", "abfs", "abfss", "hf", "memory", "http", "https")


class ConfigError(ValueError):
    """A configuration mistake, reported before any work starts."""


# --------------------------------------------------------------------------- helpers for fields
# Every field carries its one-line meaning in ``doc`` (printed by ``--explain``). Path
# fields are marked ``uri`` and model fields ``model``: :func:`resolve_paths` resolves by these marks only.


def setting(default: Any, *, doc: str = "") -> Any:
    """A plain field with a default."""
    return field(default=default, metadata={"doc": doc})


def bounded(default: Any, lo: float | None = None, hi: float | None = None, *, doc: str = "") -> Any:
    """A numeric field whose value must lie in [lo, hi] (either end optional)."""
    return field(default=default, metadata={"range": (lo, hi), "doc": doc})


def listed(*items: Any, doc: str = "") -> Any:
    """A list field with a default."""
    return field(default_factory=lambda: list(items), metadata={"doc": doc})


def section(factory: Callable[[], Any], *, doc: str = "") -> Any:
    """A field built by ``factory``: a nested section, a list of sections, a mapping."""
    return field(default_factory=factory, metadata={"doc": doc})


def uri(default: str | None, *, doc: str = "") -> Any:
    """A local path or fsspec URI; the scheme is checked and a local path is made absolute at start-up."""
    return field(default=default, metadata={"uri": True, "doc": doc})


def uri_list(*items: str, doc: str = "") -> Any:
    """A list of local paths or fsspec URIs (checked and resolved like :func:`uri`)."""
    return field(default_factory=lambda: list(items), metadata={"uri": True, "doc": doc})


def model_ref(default: str | None, *, doc: str = "") -> Any:
    """A model reference (HF id, ``tiny:<family>``, local directory or URI); local directories are made absolute."""
    return field(default=default, metadata={"model": True, "doc": doc})


def check_uri(value: str, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a path or URI, got {value!r}")
    name = uris.scheme(value)
    if name is not None and name not in KNOWN_SCHEMES:
        raise ConfigError(f"{where}: unknown URI scheme {name!r} in {value!r} (known: {', '.join(KNOWN_SCHEMES)})")


# --------------------------------------------------------------------------- shared sections


@dataclass
class ResourcesConfig:
    """How a Ray Data stage is scheduled; lets the autoscaler size the cluster."""

    num_cpus: float = bounded(1.0, 0.0, doc="CPUs per task or actor replica")
    num_gpus: float = bounded(0.0, 0.0, doc="GPUs per actor replica (fractions share a GPU)")
    batch_size: int = bounded(8, 1, doc="rows per map_batches call")
    min_replicas: int = bounded(1, 1, doc="model stages: the actor pool's smallest size (stateless stages ignore it)")
    max_replicas: int = bounded(1, 1, doc="model stages: the actor pool's largest size; the autoscaler grows up to it")
    target_ongoing_requests: float = bounded(2.0, 0.1, doc="served: calls per replica the autoscaler aims at")
    max_ongoing_requests: int = bounded(16, 1, doc="served: calls one replica takes at once (one engine call); more queue")

    def validate(self, where: str) -> None:
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"{where}.max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")


@dataclass
class EngineConfig:
    """One model behind the engine interface (``zwz_ray.engines``)."""

    backend: Literal["hf", "vllm", "openai"] = setting("hf", doc="hf (transformers), vllm or openai (an OpenAI-compatible endpoint)")
    model: str = model_ref("tiny:qwen2_5_vl", doc="model reference: HF id, local directory, URI or tiny:<family>[@seed]")
    name: str = setting("", doc="label used in stats, provenance and reports; empty: the model reference")
    device: str = setting("auto", doc="hf backend: auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting("auto", doc="weights; auto: bfloat16 on a bf16 GPU, else float32")
    min_pixels: int | None = setting(None, doc="image processor's pixel floor; null: the processor's default")
    max_pixels: int | None = setting(None, doc="image processor's pixel ceiling; null: the processor's default")
    max_batch_requests: int = bounded(8, 1, doc="hf backend: requests per generate() call")
    tensor_parallel_size: int = bounded(1, 1, doc="vllm backend: GPUs one replica shards the model over")
    gpu_memory_utilization: float = bounded(0.85, 0.05, 1.0, doc="vllm backend: fraction of GPU memory vLLM may take")
    max_model_len: int = bounded(8192, 128, doc="vllm backend: context length (prompt + generation) in tokens")
    kv_cache_memory_bytes: int | None = setting(None, doc="vllm backend: KV cache size in bytes (CPU build); null: vLLM decides")
    enforce_eager: bool = setting(False, doc="vllm backend: no CUDA graphs (faster start, slower decoding)")
    base_url: str | None = setting(None, doc="openai backend: the endpoint, e.g. http://host:8000/v1 (required)")
    api_key_env: str = setting("OPENAI_API_KEY", doc="openai backend: name of the environment variable holding the key (never stored)")
    served_model: str | None = setting(None, doc="openai backend: model name sent to the endpoint; null: `model`")
    max_concurrency: int = bounded(16, 1, doc="openai backend: requests in flight per replica")
    timeout_s: float = bounded(120.0, 1.0, doc="openai backend: per-request timeout in seconds")
    max_retries: int = bounded(5, 0, doc="openai backend: retries of a failed request (with backoff)")
    structured_output: Literal["auto", "off"] = setting("auto", doc="auto: grammar-constrained JSON where the backend can; off: free text")
    seed: int = setting(0, doc="sampling seed")
    resources: ResourcesConfig = section(ResourcesConfig, doc="scheduling of this model's actor pool")

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
    """Where the Ray runtime is."""

    address: str | None = setting(None, doc="Ray cluster address; null: RAY_ADDRESS if set, else a local instance")
    num_cpus: int | None = setting(None, doc="CPUs of a local instance (ignored when joining a cluster); null: all")
    log_to_driver: bool = setting(True, doc="show worker logs in the driver's output")
    progress_bars: bool = setting(True, doc="Ray Data progress bars (on a terminal)")


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
        if isinstance(value, bool) and ("on" if value else "off") in allowed:  # YAML 1.1 reads bare on/off as bools
            value = "on" if value else "off"
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
        for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            check_uri(item, f"{where}{'' if i is None else f'[{i}]'} in {source}")


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


def resolve_model_dir(ref: str | None) -> str | None:
    """A model reference that names a local directory, made absolute; ``tiny:`` refs, HF ids and URIs unchanged."""
    if not ref or uris.is_remote(ref):
        return ref
    if ref.startswith(("./", "../", "~", "/", uris.FILE_SCHEME)) or os.path.isdir(os.path.expanduser(ref)):
        return uris.absolute(ref)
    return ref


def resolve_paths(cfg: Any) -> Any:
    """A copy of a config tree with every marked local path (``uri``) and local model directory (``model``) made
    absolute. Done once, at start-up: a `ray job submit` driver runs in a working_dir Ray may replace mid-job."""
    if isinstance(cfg, list):
        return [resolve_paths(item) for item in cfg]
    if not dataclasses.is_dataclass(cfg):
        return cfg
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("uri"):
            changes[f.name] = [uris.absolute(v) for v in value] if isinstance(value, list) else value and uris.absolute(value)
        elif f.metadata.get("model"):
            changes[f.name] = resolve_model_dir(value)
        else:
            changes[f.name] = resolve_paths(value)
    return dataclasses.replace(cfg, **changes)
