"""Local paths and fsspec URIs, handled one way everywhere.

The rules, in one place:

- A *remote* location has a scheme other than ``file://`` (``s3://``, ``gs://``, ``hf://``, ``memory://``,
  ...). ``file://x`` is the local path ``x``; a bare path is local.
- ``~`` is expanded in local paths only; a relative local path is made absolute against the current
  directory (or ``base``) once, at start-up. Remote URIs are never changed.
- Joining uses ``/`` for remote URIs and ``os.path.join`` for local paths.
- Paths found under a location (a listing) are shown in that location's form: remote ones with their
  scheme, local ones bare, or with ``file://`` when the location was written with it.
- An atomic write replaces a file in one step: write-then-rename locally, a single PUT on object stores
  (which never show a partial object).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

FILE_SCHEME = "file://"


def scheme(path: str) -> str | None:
    """The URI scheme (``"s3"``, ``"file"``), or None for a bare path."""
    return path.split("://", 1)[0].lower() if "://" in path else None


def is_remote(path: str) -> bool:
    """True for a URI that does not name the local filesystem (anything but a bare path or ``file://``)."""
    return scheme(path) not in (None, "file")


def local_path(path: str) -> str:
    """The local filesystem path of a bare path or ``file://`` URI, with ``~`` expanded."""
    if is_remote(path):
        raise ValueError(f"{path!r} is not a local path")
    return os.path.expanduser(path.removeprefix(FILE_SCHEME))


def absolute(path: str, base: str | None = None) -> str:
    """A local path made absolute (``~`` expanded, ``file://`` dropped, relative to ``base`` or the current
    directory); a remote URI unchanged."""
    if not path or is_remote(path):
        return path
    local = local_path(path)
    if os.path.isabs(local):
        return os.path.normpath(local)
    if base is None:
        return os.path.abspath(local)
    if is_remote(base):
        return join(base, local)
    return os.path.abspath(os.path.join(local_path(base), local))


def join(base: str, *parts: str) -> str:
    """``base`` joined with ``parts``: with ``/`` for remote URIs, ``os.path.join`` for local paths."""
    if is_remote(base):
        pieces = [base.rstrip("/")] + [p.strip("/") for p in parts if p]
        return "/".join(pieces)
    return os.path.join(local_path(base), *parts) if parts else local_path(base)


def filesystem(path: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a local path or URI."""
    import fsspec

    if not is_remote(path):
        return fsspec.filesystem("file"), os.path.abspath(local_path(path))
    return fsspec.core.url_to_fs(path)


def display(fs: Any, path: str, like: str | None = None) -> str:
    """A path inside ``fs`` as the user would type it: with its scheme for a remote filesystem, bare for
    local files, or as a ``file://`` URI when ``like`` (the location it was found under) is one."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local"):
        return fs.unstrip_protocol(path)
    return FILE_SCHEME + path if like is not None and like.startswith(FILE_SCHEME) else path


def atomic_write(path: str, data: bytes | str) -> None:
    """Replace the file at ``path`` in one step (rename locally, a single PUT remotely); parents are made."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        fs, inner = filesystem(path)
        parent = inner.rsplit("/", 1)[0]
        if parent and parent != inner:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(inner, payload)
        return
    target = local_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
