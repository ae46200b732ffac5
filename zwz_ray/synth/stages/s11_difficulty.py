"""Stage 11, the difficulty filter: the student answers the MCQ K times on the overlay; too many
right answers mean the question is too easy.

As in the reference, the student reasons step by step (temperature 1.0, a large budget) and puts
its choice in ``\\boxed{}`` (``<answer>`` works too). Each sample is scored by the shared cascade,
:func:`zwz_ray.replies.judge_answer` (the option letter, then the option's text); what the rules
leave ``undecided`` goes to the LLM judge (:class:`zwz_ray.judge.LLMJudge` on ``models.judge``)
when ``difficulty.judge`` is on, else counts as wrong. The judge is asked only when its verdicts
could change the keep decision. More than ``max_correct`` right answers: dropped as ``too_easy``.

A failed student call is a failed model call (an ``engine_error`` drop). ``difficulty.on_error:
keep`` is the reference's behaviour instead: the row is kept unchecked (``difficulty_checked``
false) and counted under the stage's ``unchecked`` flag in stats.json.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, ChatResult, Engine, SamplingParams, as_pil, user_message
from zwz_ray.prompts import difficulty_prompt
from zwz_ray.replies import Verdict, judge_answer
from zwz_ray.synth.config import DifficultyConfig
from zwz_ray.synth.stages.base import QUESTION, ModelStage, boxed_frame, frame_of, row_seed
from zwz_ray.synth.stages.s10_mcq import LETTERS


def score_samples(texts: list[str], letter: str, options: list[str], policy: str = "default") -> list[Verdict]:
    """The rule verdict of every student sample against the correct ``letter``."""
    lettered = dict(zip(LETTERS, options))
    return [judge_answer(t, letter, is_mcq=True, options=lettered, policy=policy) for t in texts]


def judge_matters(verdicts: list[Verdict], max_correct: int) -> bool:
    """Whether the undecided samples could change the decision (more than ``max_correct`` right)."""
    right = sum(v.correct for v in verdicts)
    open_ = sum(v.rule == "undecided" for v in verdicts)
    return right <= max_correct < right + open_


class Difficulty(ModelStage):
    """Stage 11: the student answers the MCQ K times on the overlay; too many right means too easy."""

    name = "difficulty"
    reads = ("image", "problem", "answer", "options")
    writes = ("difficulty_correct", "difficulty_checked")
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, difficulty: DifficultyConfig, judge: EngineConfig | None = None, *,
                 judge_engine: Engine | None = None, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = difficulty
        self.judge_config = judge if difficulty.judge else None
        self.judge = None
        if self.judge_config is not None:
            from zwz_ray.engines import connect
            from zwz_ray.judge import LLMJudge

            self.judge = LLMJudge(judge_engine or connect(self.judge_config, self.served), difficulty.judge_max_tokens)

    def engines(self) -> dict[str, Engine]:
        out = super().engines()
        if self.judge is not None:
            out[self.judge_config.label] = self.judge.engine
        return out

    def _request(self, row: dict) -> ChatRequest:
        cfg = self.cfg
        letters = " | ".join(f'"{x}"' for x in LETTERS[: len(row["options"])])
        grammar = frame_of(cfg, boxed_frame(cfg.frame_reasoning_chars, 1, answer=letters))
        message = user_message(difficulty_prompt(row["problem"]), [self.fit(as_pil(row["image"]))])
        sampling = SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_tokens, row_seed(self.engine_config.seed, self.stage_name, row))
        return ChatRequest([message], sampling, grammar=grammar)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        scored: list[tuple[dict, list[str], list[Verdict]]] = []
        for row, result in zip(rows, self.chat([self._request(row) for row in rows])):
            if self._failed(row, result):
                continue
            texts = list(result.texts)
            scored.append((row, texts, score_samples(texts, row["answer"], row["options"], self.cfg.extraction)))
        self._ask_judge(scored)
        for row, _, verdicts in scored:
            self._decide(row, verdicts)
        return [[row] for row in rows]

    def _failed(self, row: dict, result: ChatResult) -> bool:
        if result.ok:
            return False
        if self.cfg.on_error == "keep":  # the reference keeps an item whose student call failed
            row["difficulty_checked"] = False
            self.flag("unchecked")
        else:
            self.drop(row, "engine_error", result.error)
        return True

    def _ask_judge(self, scored: list) -> None:
        """Undecided samples of the rows where they matter, all in ONE judge call; a judge that gives no
        usable decision leaves the sample wrong."""
        if self.judge is None:
            return
        asked = []
        for row, _, verdicts in scored:
            if not judge_matters(verdicts, self.cfg.max_correct):
                continue
            correct = f"{row['answer']}. {row['options'][LETTERS.index(row['answer'])]}"
            for j, v in enumerate(verdicts):
                if v.rule == "undecided":
                    asked.append((verdicts, j, {"question": row["problem"], "answer": correct, "extracted": v.extracted}))
        decisions = self.judge.decide([item for _, _, item in asked]) if asked else []
        for (verdicts, j, _), (same, _) in zip(asked, decisions):
            verdicts[j] = Verdict(verdicts[j].extracted, bool(same), "llm_judge")

    def _decide(self, row: dict, verdicts: list[Verdict]) -> None:
        row["difficulty_checked"] = True
        row["difficulty_correct"] = sum(v.correct for v in verdicts)
        if row["difficulty_correct"] > self.cfg.max_correct:
            rules = ", ".join(v.rule for v in verdicts)
            self.drop(row, "too_easy", f"the student was right {row['difficulty_correct']} of {self.cfg.k} times ({rules})")
