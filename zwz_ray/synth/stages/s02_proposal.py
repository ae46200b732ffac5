"""Stage 2, object proposal: the teacher lists distinct objects that appear once; the image fans
out to one row per object. Its reply schema and the cleaning of object names live here.
"""

from __future__ import annotations

import re
from typing import Any

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, user_message
from zwz_ray.prompts import proposal_prompt
from zwz_ray.synth.columns import child
from zwz_ray.synth.config import InputConfig, ProposalConfig
from zwz_ray.synth.stages.base import IMAGE, OBJECT, ModelStage, SourceImages, bounded_array, bounded_string, json_object, sampling

NAME_MIN_CHARS, NAME_MAX_CHARS = 2, 49  # the paper keeps object names of 2..49 characters


def proposal_schema(max_objects: int = 20) -> dict:
    """``{"objects": [name, ...]}``."""
    return json_object(objects=bounded_array(bounded_string(NAME_MAX_CHARS, NAME_MIN_CHARS), max_objects))


PROPOSAL_SCHEMA = proposal_schema()


_MARKER = re.compile(
    r"^\s*(?:[-*+•·▪◦–—]+\s*"  # bullets
    r"|\(?\d{1,3}[.)\]:](?=\s|$)\s*"  # 1.  1)  (1)  1:
    r"|\[\d{1,3}\]\s*"  # [1]
    r"|#\d{1,3}[.):]?\s*"  # #1
    r"|\d{1,3}\s+[-–—]\s+)"  # 1 - name
)
_QUOTES = "\"'`“”‘’«»"
_DESCRIPTION = re.compile(r":\s|\s[-–—]\s")


def _strip_marker(item: str) -> str:
    return _MARKER.sub("", item, count=1)


def _clean_name(item: str) -> str:
    name = _strip_marker(item).replace("**", "").replace("__", "")
    name = _DESCRIPTION.split(name, maxsplit=1)[0]  # "red cup: a cup on the table" -> "red cup"
    name = " ".join(name.split())
    return name.strip(_QUOTES + " .,;:!?").strip()


def clean_object_names(names: Any, min_chars: int = NAME_MIN_CHARS, max_chars: int = NAME_MAX_CHARS) -> list[str]:
    """Object names without numbering, bullets, quotes or trailing punctuation.

    Duplicates (case-insensitive) and names outside ``min_chars..max_chars`` characters are
    dropped; order is kept. Non-string items are skipped.
    """
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        return []
    seen: set[str] = set()
    out: list[str] = []
    for item in names:
        if not isinstance(item, str):
            continue
        name = _clean_name(item)
        key = name.casefold()
        if min_chars <= len(name) <= max_chars and key not in seen:
            seen.add(key)
            out.append(name)
    return out


class Proposal(ModelStage):
    """Stage 2: the teacher lists distinct objects that appear once; the image fans out to objects."""

    name = "proposal"
    reads = ("source", "image_width", "image_height")
    writes = ("object_index", "n_objects", "object_name")
    level_in, level_out = IMAGE, OBJECT

    def __init__(self, engine_config: EngineConfig, proposal: ProposalConfig, input: InputConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = proposal
        self.schema = proposal_schema(proposal.max_objects)
        self.images = SourceImages(input.max_bytes, input.max_pixels)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        asked, requests = [], []
        for row in rows:
            image = self.images.load_for(self, row)
            if image is not None:
                asked.append(row)
                message = user_message(proposal_prompt(self.cfg.max_objects), [self.fit(image)])
                requests.append(ChatRequest([message], sampling(self.cfg, self.seed(row)), self.schema, row["source"]))
        fanned = {id(row): out for row, out in zip(asked, map(self._objects, asked, self.chat(requests)))}
        return [fanned.get(id(row), [row]) for row in rows]

    def _objects(self, row: dict, result) -> list[dict]:
        value = self.reply(row, result, self.schema)
        if value is None:
            return [row]
        names = clean_object_names(value["objects"], self.cfg.min_chars, self.cfg.max_chars)[: self.cfg.max_objects]
        if len(names) < self.cfg.min_objects:
            return [self.drop(row, "too_few_objects", f"{len(names)} usable of {self.cfg.min_objects} needed: {names}")]
        return [child(row, i == 0, object_index=i, n_objects=len(names), object_name=name) for i, name in enumerate(names)]
