"""Stage 11, the difficulty filter: the student answers the MCQ K times on the overlay; too many
right answers mean the question is too easy.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, as_pil, user_message
from zwz_ray.prompts import difficulty_prompt
from zwz_ray.replies import read_letter
from zwz_ray.synth.config import DifficultyConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, json_object, row_seed
from zwz_ray.synth.stages.s10_mcq import LETTERS


def difficulty_schema(letters: str | list[str] = "ABCD") -> dict:
    """``{"answer": letter}``."""
    return json_object(answer={"type": "string", "enum": list(letters)})


DIFFICULTY_SCHEMA = difficulty_schema()


class Difficulty(ModelStage):
    """Stage 11: the student answers the MCQ K times on the overlay; too many right means too easy."""

    name = "difficulty"
    reads = ("image", "problem", "answer", "options")
    writes = ("difficulty_correct",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, difficulty: DifficultyConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = difficulty

    def process(self, rows: list[dict]) -> list[list[dict]]:
        cfg = self.cfg
        requests = []
        for row in rows:
            letters = LETTERS[: len(row["options"])]
            message = user_message(difficulty_prompt(row["problem"]), [self.fit(as_pil(row["image"]))])
            sampling = SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_tokens, row_seed(self.engine_config.seed, self.stage_name, row))
            requests.append(ChatRequest([message], sampling, difficulty_schema(letters)))
        for row, result in zip(rows, self.chat(requests)):
            if result.error:
                self.drop(row, "engine_error", result.error)
                continue
            letters = LETTERS[: len(row["options"])]
            picks = [read_letter(text, letters, row["options"]) for text in result.texts]
            row["difficulty_correct"] = sum(p == row["answer"] for p in picks)
            if row["difficulty_correct"] > cfg.max_correct:
                self.drop(row, "too_easy", f"the student was right {row['difficulty_correct']} of {cfg.k} times")
        return [[row] for row in rows]
