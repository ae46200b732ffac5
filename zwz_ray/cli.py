"""The command line every job shares: ``python -m pipelines.<job> [--config FILE] [--set key=value ...]``.

One rule for all jobs: without ``--config`` a job reads its laptop config, ``configs/<folder>/laptop.yaml``
in the repository (the folder is named by the job's :class:`Job`), or its built-in defaults where that file
is absent (an installed package without the repository). ``--print-config`` prints the resolved config and
exits; ``--explain`` prints every key with its value, its one-line meaning and its default.

Local paths in the config are made absolute once, here, before the job runs (see
:func:`zwz_ray.config.resolve_paths`); a config with an ``as_run(written_keys)`` method (the chain's) is
turned into the config as it runs, so ``--print-config`` and the recorded config show what ran. A
configuration mistake, including a path the job's start-up checks find wrong (:mod:`zwz_ray.preflight`),
exits with status 2 and one ``config error: ...`` line naming it, before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from zwz_ray.config import ConfigError, load_config, resolve_paths, to_dict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Job:
    """One entry point: its config class, its run function and how its result is summarised."""

    name: str  # the module under pipelines/
    config_class: type
    config_folder: str  # configs/<config_folder>/laptop.yaml is the default config
    run: Callable[[Any], Any]
    summary: Callable[[Any], typing.Iterable[str]]
    errors: tuple[type[BaseException], ...] = ()  # bad input the job reports as one line (exit status 2)
    plan: Callable[[Any], str] | None = None  # ``--plan``: what the job would start (models, replicas, GPUs)

    @property
    def default_config(self) -> str:
        return os.path.join(REPO_ROOT, "configs", self.config_folder, "laptop.yaml")

    def main(self, argv: typing.Sequence[str] | None = None, *, description: str = "") -> int:
        cfg = config_from_cli(self.config_class, argv, description=description, default_config=self.default_config,
                              prog=f"python -m pipelines.{self.name}", plan=self.plan)
        try:
            result = self.run(cfg)
        except ConfigError as exc:  # a path, URI or output location found wrong at start-up (zwz_ray.preflight)
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        except self.errors as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for line in self.summary(result):
            print(line)
        return 0


def parser_for(description: str = "", default_config: str | None = None, prog: str | None = None,
               plan: bool = False) -> argparse.ArgumentParser:
    shown = os.path.relpath(default_config, REPO_ROOT) if default_config else None
    default = f" (default: {shown}, or the built-in defaults where that file is absent)" if shown else ""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", help=f"YAML config file{default}")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set output.dir=/tmp/out")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--explain", action="store_true",
                        help="print every config key with its value, meaning and default, and exit")
    if plan:
        parser.add_argument("--plan", action="store_true", help="print the models the job would serve (stages, replicas, "
                            "GPUs per replica) and the total GPUs, start nothing, and exit")
    return parser


def config_from_cli(cls: type, argv: typing.Sequence[str] | None = None, *, description: str = "",
                    default_config: str | None = None, prog: str | None = None,
                    plan: Callable[[Any], str] | None = None) -> Any:
    """Parse ``--config/--set/--print-config/--explain`` (and ``--plan`` when the job has one); exits with a short
    message on a config error."""
    parser = parser_for(description, default_config, prog, plan=plan is not None)
    args = parser.parse_args(argv)
    path = args.config or (default_config if default_config and os.path.isfile(default_config) else None)
    try:
        cfg = resolve_paths(load_config(cls, path, args.set))
        if callable(getattr(cfg, "as_run", None)):  # a config some of whose keys its job sets (the chain's)
            from zwz_ray.preflight import written_keys

            cfg = cfg.as_run(written_keys(path, args.set))
    except ConfigError as exc:
        parser.exit(2, f"config error: {exc}\n")
    if args.explain:
        print(explain(cfg))
        parser.exit(0)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        parser.exit(0)
    if plan is not None and args.plan:
        try:
            print(plan(cfg))
        except ConfigError as exc:
            parser.exit(2, f"config error: {exc}\n")
        parser.exit(0)
    return cfg


# --------------------------------------------------------------------------- --explain


def show(value: Any) -> str:
    """A value as it would be written in YAML flow style."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.strip() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def explain_rows(node: Any, prefix: str = "") -> typing.Iterator[tuple[str, str, str]]:
    """(key, value + default, meaning) for every key of a config tree; sections and list items get a header row."""
    defaults = type(node)()
    for f in dataclasses.fields(node):
        key, value, doc = f"{prefix}{f.name}", getattr(node, f.name), f.metadata.get("doc", "")
        items = value if isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value) else None
        if dataclasses.is_dataclass(value):
            yield key, "", doc or (type(value).__doc__ or "").strip().splitlines()[0]
            yield from explain_rows(value, f"{key}.")
        elif items is not None:
            yield key, f"({len(items)} item{'s' if len(items) != 1 else ''})", doc
            for i, item in enumerate(items):
                yield from explain_rows(item, f"{key}.{i}.")
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            yield key, f"({len(value)} named section{'s' if len(value) != 1 else ''})", doc
            for name, item in value.items():
                yield from explain_rows(item, f"{key}.{name}.")
        else:
            default = getattr(defaults, f.name)
            shown = show(value) if value == default else f"{show(value)} (default: {show(default)})"
            yield key, shown, doc


def explain(cfg: Any) -> str:
    """Every key of ``cfg`` with its value (and default where it differs) and its one-line meaning."""
    rows = list(explain_rows(cfg))
    kw = max(len(k) for k, _, _ in rows)
    vw = min(max(len(v) for _, v, _ in rows), 40)
    return "\n".join(f"{k:<{kw}}  {v:<{vw}}  {doc}".rstrip() for k, v, doc in rows)
