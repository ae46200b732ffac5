"""Stage 6, question validation: the teacher sees the full image and the crop; a question passes
only when all four criteria hold.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, as_pil, user_message
from zwz_ray.prompts import validation_prompt
from zwz_ray.synth.config import InputConfig, ValidationConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, SourceImages, bounded_string, json_object, sampling, yes_no

REASON_MAX_CHARS = 300
VALIDATION_SCHEMA = json_object(reason=bounded_string(REASON_MAX_CHARS), valid=yes_no())


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

    def process(self, rows: list[dict]) -> list[list[dict]]:
        asked, requests = [], []
        for row in rows:
            full = self.images.load_for(self, row)
            if full is None:
                continue
            images = [self.fit(full), self.fit(as_pil(row["crop"]))]  # prompts.VALIDATION_IMAGE_ORDER
            message = user_message(validation_prompt(row["question"]), images)
            asked.append(row)
            requests.append(ChatRequest([message], sampling(self.cfg, self.seed(row)), VALIDATION_SCHEMA))
        for row, result in zip(asked, self.chat(requests)):
            value = self.reply(row, result, VALIDATION_SCHEMA)
            if value is None:
                continue
            row["validation_reason"] = value["reason"]
            if value["valid"] != "Yes":
                self.drop(row, "invalid_question", value["reason"])
        return [[row] for row in rows]
