"""Stage 7, answering: every answerer is its own stage (its own actor pool and GPUs) and asks for
all its samples on the crop in ONE request.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, as_pil, user_message
from zwz_ray.prompts import answer_prompt
from zwz_ray.synth.config import AnswersConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, bounded_string, json_object, parse_reply

REASONING_MAX_CHARS = 600
ANSWER_MAX_CHARS = 40
ANSWER_SCHEMA = json_object(reasoning=bounded_string(REASONING_MAX_CHARS, 0), answer=bounded_string(ANSWER_MAX_CHARS))


class Answers(ModelStage):
    """Stage 7: one answerer, ``samples_per_teacher`` samples on the crop in one request.

    An unparseable sample stays in ``teacher_answers`` as "" (it counts against consensus).
    """

    name = "answers"
    reads = ("crop", "question")
    writes = ("teacher_answers",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, answers: AnswersConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = answers

    def process(self, rows: list[dict]) -> list[list[dict]]:
        cfg = self.cfg
        requests = [
            ChatRequest([user_message(answer_prompt(row["question"]), [self.fit(as_pil(row["crop"]))])],
                        SamplingParams(cfg.samples_per_teacher, cfg.temperature, cfg.top_p, cfg.max_tokens, self.seed(row)),
                        ANSWER_SCHEMA)
            for row in rows
        ]
        for row, result in zip(rows, self.chat(requests)):
            if result.error:
                self.drop(row, "engine_error", result.error)
                continue
            texts = list(result.texts)[: cfg.samples_per_teacher]
            texts += [""] * (cfg.samples_per_teacher - len(texts))
            row["teacher_answers"] = list(row["teacher_answers"] or []) + [_answer(t) for t in texts]
        return [[row] for row in rows]


def _answer(text: str) -> str:
    value, _ = parse_reply(text, ANSWER_SCHEMA)
    return " ".join(str(value["answer"]).split()) if value is not None else ""
