"""Answering (7), consensus (8) and the difficulty filter (11).

Every answerer is its own stage (its own actor pool and GPUs) and asks for all its samples in
ONE request. Consensus groups answers with the deterministic normaliser first; the text judge
sees only what is left, every pair of a batch in one engine call.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, Engine, SamplingParams, as_pil, user_message
from zwz_ray.parsing import parse_choice
from zwz_ray.prompts import answer_prompt, difficulty_prompt, equivalence_prompt
from zwz_ray.synth.config import AnswersConfig, ConsensusConfig, DifficultyConfig
from zwz_ray.synth.consensus import consensus, keep
from zwz_ray.synth.mcq import LETTERS
from zwz_ray.synth.schemas import ANSWER_SCHEMA, EQUIVALENCE_SCHEMA, difficulty_schema
from zwz_ray.synth.stage import QUESTION, ModelStage, Stage, parse_reply, row_seed


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


class Consensus(Stage):
    """Stage 8: the largest group of equivalent answers must hold ``threshold`` of all samples."""

    name = "consensus"
    reads = ("question", "teacher_answers")
    writes = ("answer_text", "consistency", "consensus_by")
    level_in = level_out = QUESTION

    def __init__(self, consensus: ConsensusConfig, judge: EngineConfig | None = None, *,
                 engine: Engine | None = None, expected_samples: int = 0, **kw):
        super().__init__(**kw)
        self.cfg = consensus
        self.judge_config = judge
        self.expected = expected_samples
        self.judge = engine
        if judge is not None and engine is None:
            from zwz_ray.engines import build_engine

            self.judge = build_engine(judge)

    def engines(self) -> dict[str, Engine]:
        return {self.judge_config.label: self.judge} if self.judge is not None else {}

    def process(self, rows: list[dict]) -> list[list[dict]]:
        verdicts: dict[tuple, bool] = {}
        if self.judge is not None:
            asked: set[tuple] = set()
            self._decide(rows, verdicts, asked)  # a dry run records the pairs the judge must see
            self._ask_judge(sorted(asked), verdicts)
        results = self._decide(rows, verdicts)
        for row, result in zip(rows, results):
            self._apply(row, result)
        return [[row] for row in rows]

    def _decide(self, rows: list[dict], verdicts: dict, asked: set | None = None) -> list:
        out = []
        for row in rows:
            answers = list(row["teacher_answers"] or [])
            answers += [""] * max(0, self.expected - len(answers))  # missing samples count against
            same = None
            if self.judge is not None:
                same = _lookup(row["question"], verdicts, asked)
            out.append(consensus(answers, self.cfg.threshold, same=same))
        return out

    def _ask_judge(self, pairs: list[tuple], verdicts: dict) -> None:
        """Every pair of the batch in ONE engine call; a failed verdict counts as "different"."""
        todo = [p for p in pairs if p not in verdicts]
        requests = [
            ChatRequest([user_message(equivalence_prompt(q, a, b))],
                        SamplingParams(1, 0.0, 1.0, self.cfg.judge_max_tokens, 0), EQUIVALENCE_SCHEMA)
            for q, a, b in todo
        ]
        for pair, result in zip(todo, self.judge.chat(requests) if requests else []):
            value, _ = parse_reply(result.texts[0] if result.ok and result.texts else "", EQUIVALENCE_SCHEMA)
            verdicts[pair] = bool(value is not None and value["same"] == "Yes")

    def _apply(self, row: dict, result) -> None:
        row["consistency"] = result.fraction
        row["consensus_by"] = result.decided_by
        if keep(result, self.cfg.threshold):
            row["answer_text"] = result.answer
            return
        sizes = result.group_sizes or [0]
        self.drop(row, "no_consensus", f"largest group {sizes[0]} of {result.n} ({result.fraction:.2f} < {self.cfg.threshold})")


def _lookup(question: str, verdicts: dict, asked: set | None):
    """A judge callback answering from ``verdicts``; unknown pairs are recorded in ``asked``."""

    def same(pairs: list[tuple[str, str]]) -> list[bool]:
        flags = []
        for a, b in pairs:
            key = (question, a, b)
            if key not in verdicts and asked is not None:
                asked.add(key)
            flags.append(verdicts.get(key, False))
        return flags

    return same


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
            picks = [parse_choice(text, letters, row["options"]) for text in result.texts]
            row["difficulty_correct"] = sum(p == row["answer"] for p in picks)
            if row["difficulty_correct"] > cfg.max_correct:
                self.drop(row, "too_easy", f"the student was right {row['difficulty_correct']} of {cfg.k} times")
        return [[row] for row in rows]
