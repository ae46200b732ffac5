"""Stage 7, answering: every answerer is its own stage (its own actor pool and GPUs) and asks for
all its samples on the crop in ONE request.

As in the reference, a teacher reasons freely, step by step, and puts its final answer in
``\\boxed{}``; the answer is the content of the last box (an OCR answer may be a whole sentence,
so nothing caps it). ``answers.frame: boxed_grammar`` constrains only the reply's frame (bounded
reasoning, then one box of up to ``answers.answer_max_chars`` characters) for models that never
close a free-form answer on their own (random tiny models); the reply is read the same way.

Early stop (``consensus.early_stop``, default ``exact``): the answerer at ``position`` k of
``answerers`` asks stage 8's :func:`early_drop` whether the samples of answerers 1..k-1 already rule
the question out, given the samples this and the later answerers would add. If so it passes the row
through untouched (no model call, ``teacher_answers`` unchanged) and counts it under the flags
``early_stopped`` (rows) and ``samples_saved`` (samples not drawn); stage 8 then drops it as
``no_consensus``, as it would have after full sampling. The first answerer never skips, and a
request's seed depends only on the stage and the row, so every request that is still sent is the
one full sampling sends: kept rows are byte-identical with early stop on or off (``exact``).
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, as_pil, user_message
from zwz_ray.prompts import answer_prompt
from zwz_ray.replies import extract_answer
from zwz_ray.synth.config import AnswersConfig, ConsensusConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, boxed_frame, frame_of
from zwz_ray.synth.stages.s08_consensus import early_drop


def read_answer(text: str) -> str:
    """The final answer of a teacher reply: the last ``\\boxed{}``'s content, whitespace collapsed; "" without one."""
    return extract_answer(text, "boxed") or ""


class Answers(ModelStage):
    """Stage 7: one answerer, ``samples_per_teacher`` samples on the crop in one request.

    A sample without a boxed answer stays in ``teacher_answers`` as "" (it counts against consensus).
    ``consensus`` (its threshold and ``early_stop``), ``position`` (1-based), ``answerers`` (how many in
    all) and ``judged`` (whether a stage-8 judge will see the samples) place the stage for early stop;
    without ``consensus`` it samples every question.
    """

    name = "answers"
    reads = ("crop", "question")
    writes = ("teacher_answers",)
    level_in = level_out = QUESTION

    def __init__(
        self,
        engine_config: EngineConfig,
        answers: AnswersConfig,
        consensus: ConsensusConfig | None = None,
        *,
        position: int = 1,
        answerers: int = 1,
        judged: bool = False,
        **kw,
    ):
        if not 1 <= position <= answerers:
            raise ValueError(f"answerer position {position} is not within 1..{answerers}")
        super().__init__(engine_config, **kw)
        self.cfg = answers
        self.grammar = frame_of(answers, boxed_frame(answers.frame_reasoning_chars, answers.answer_max_chars))
        self.rule = consensus.early_stop if consensus is not None else "off"
        self.threshold = consensus.threshold if consensus is not None else 0.0
        self.judged = judged
        self.total = answers.samples_per_teacher * answerers  # what stage 8 pads to
        self.remaining = answers.samples_per_teacher * (answerers - position + 1)  # this stage's and the later ones'

    def lost(self, row: dict) -> bool:
        """Whether the question is already decided as a drop by the samples so far (see module doc)."""
        answers = list(row["teacher_answers"] or [])
        return early_drop(answers, self.remaining, self.total, self.threshold, self.rule, self.judged)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        cfg = self.cfg
        todo = []
        for row in rows:
            if self.lost(row):
                self.flag("early_stopped")
                self.flag("samples_saved", cfg.samples_per_teacher)
            else:
                todo.append(row)
        requests = [
            ChatRequest(
                [user_message(answer_prompt(row["question"]), [self.fit(as_pil(row["crop"]))])],
                SamplingParams(cfg.samples_per_teacher, cfg.temperature, cfg.top_p, cfg.max_tokens, self.seed(row)),
                grammar=self.grammar,
            )
            for row in todo
        ]
        for row, result in zip(todo, self.chat(requests)):
            if result.error:
                self.drop(row, "engine_error", result.error)
                continue
            texts = list(result.texts)[: cfg.samples_per_teacher]
            texts += [""] * (cfg.samples_per_teacher - len(texts))
            row["teacher_answers"] = list(row["teacher_answers"] or []) + [read_answer(t) for t in texts]
        return [[row] for row in rows]
