"""Stage 6, question validation: the teacher sees the full image and the crop; a question passes
only when all four criteria hold.

As in the reference, the validator reasons step by step in free text (no length cap on the
reasoning) and the FIRST ``VALID: Yes`` / ``VALID: No`` line of its reply decides; a reply with
no such line is unparseable. ``validation.frame: verdict_grammar`` constrains only that frame
(bounded reasoning, then the verdict line) for models that never stop on their own.
"""

from __future__ import annotations

import re

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, ChatResult, as_pil, user_message
from zwz_ray.prompts import VERDICT_PREFIX, validation_prompt
from zwz_ray.synth.config import InputConfig, ValidationConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, SourceImages, frame_of, sampling, verdict_frame

_VERDICT = re.compile(rf"[*_#]*{re.escape(VERDICT_PREFIX)}[\s*_]*(yes|no)\b", re.IGNORECASE)  # "**VALID:** No" too
REASON_KEEP_CHARS = 2000  # what the row keeps of the reasoning (provenance, not a cap on the model)


def read_verdict(text: str) -> tuple[bool | None, str]:
    """(valid, reasoning) from a validator reply: the first ``VALID: Yes/No`` decides; None without one."""
    m = _VERDICT.search(text or "")
    if m is None:
        return None, ""
    reason = " ".join(text[: m.start()].split()) or m.group(0)
    return m.group(1).lower() == "yes", reason[-REASON_KEEP_CHARS:]


class Validation(ModelStage):
    """Stage 6: full image + crop; the question passes only when all four criteria hold."""

    name = "validation"
    reads = ("source", "crop", "question")
    writes = ("validation_reason",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, validation: ValidationConfig, input: InputConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = validation
        self.images = SourceImages(input.max_bytes, input.max_pixels)
        self.grammar = frame_of(validation, verdict_frame(validation.frame_reasoning_chars, VERDICT_PREFIX))

    def process(self, rows: list[dict]) -> list[list[dict]]:
        asked, requests = [], []
        for row in rows:
            full = self.images.load_for(self, row)
            if full is None:
                continue
            images = [self.fit(full), self.fit(as_pil(row["crop"]))]  # prompts.VALIDATION_IMAGE_ORDER
            message = user_message(validation_prompt(row["question"]), images)
            asked.append(row)
            requests.append(ChatRequest([message], sampling(self.cfg, self.seed(row)), grammar=self.grammar))
        for row, result in zip(asked, self.chat(requests)):
            self._judge(row, result)
        return [[row] for row in rows]

    def _judge(self, row: dict, result: ChatResult) -> None:
        if result.error:
            self.drop(row, "engine_error", result.error)
            return
        text = result.texts[0] if result.texts else ""
        valid, reason = read_verdict(text)
        if valid is None:
            self.drop(row, "unparseable_output", f"no '{VERDICT_PREFIX} Yes/No' line in: {text[-200:]!r}")
            return
        row["validation_reason"] = reason
        if not valid:
            self.drop(row, "invalid_question", reason)
