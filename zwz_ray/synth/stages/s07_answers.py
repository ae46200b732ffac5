"""Stage 7, answering: every answerer is its own stage (its own actor pool and GPUs) and asks for
all its samples on the crop in ONE request.

As in the reference, a teacher reasons freely, step by step, and puts its final answer in
``\\boxed{}``; the answer is the content of the last box (an OCR answer may be a whole sentence,
so nothing caps it). ``answers.frame: boxed_grammar`` constrains only the reply's frame (bounded
reasoning, then one box of up to ``answers.answer_max_chars`` characters) for models that never
close a free-form answer on their own (random tiny models); the reply is read the same way.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, as_pil, user_message
from zwz_ray.prompts import answer_prompt
from zwz_ray.replies import extract_answer
from zwz_ray.synth.config import AnswersConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, boxed_frame, frame_of


def read_answer(text: str) -> str:
    """The final answer of a teacher reply: the last ``\\boxed{}``'s content, whitespace collapsed; "" without one."""
    return extract_answer(text, "boxed") or ""


class Answers(ModelStage):
    """Stage 7: one answerer, ``samples_per_teacher`` samples on the crop in one request.

    A sample without a boxed answer stays in ``teacher_answers`` as "" (it counts against consensus).
    """

    name = "answers"
    reads = ("crop", "question")
    writes = ("teacher_answers",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, answers: AnswersConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = answers
        self.grammar = frame_of(answers, boxed_frame(answers.frame_reasoning_chars, answers.answer_max_chars))

    def process(self, rows: list[dict]) -> list[list[dict]]:
        cfg = self.cfg
        requests = [
            ChatRequest([user_message(answer_prompt(row["question"]), [self.fit(as_pil(row["crop"]))])],
                        SamplingParams(cfg.samples_per_teacher, cfg.temperature, cfg.top_p, cfg.max_tokens, self.seed(row)),
                        grammar=self.grammar)
            for row in rows
        ]
        for row, result in zip(rows, self.chat(requests)):
            if result.error:
                self.drop(row, "engine_error", result.error)
                continue
            texts = list(result.texts)[: cfg.samples_per_teacher]
            texts += [""] * (cfg.samples_per_teacher - len(texts))
            row["teacher_answers"] = list(row["teacher_answers"] or []) + [read_answer(t) for t in texts]
        return [[row] for row in rows]
