"""Stage 5, question generation: the teacher sees only the crop and writes up to n questions;
the object fans out to one row per question.

As in the reference, the teacher is NOT told the grounded object's name (naming it would leak the
grounding label into the questions and bias them toward naming the object); it sees the crop and
15 seed examples. The type label (``question_type``) is the teacher's own metadata.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, as_pil, user_message
from zwz_ray.prompts import QUESTION_TYPES, load_seed_questions, question_prompt, sample_examples
from zwz_ray.replies import normalize_answer
from zwz_ray.synth.columns import child
from zwz_ray.synth.config import QuestionsConfig
from zwz_ray.synth.stages.base import (
    OBJECT,
    QUESTION,
    ModelStage,
    bounded_array,
    bounded_string,
    json_object,
    sampling,
    source_key,
    stable_seed,
)

QUESTION_MAX_CHARS = 160


def questions_schema(n: int = 3) -> dict:
    """``{"questions": [{"type": ..., "question": ...}]}``, possibly empty."""
    item = json_object(type={"type": "string", "enum": list(QUESTION_TYPES)}, question=bounded_string(QUESTION_MAX_CHARS, 5))
    return json_object(questions=bounded_array(item, n))


QUESTIONS_SCHEMA = questions_schema()


class Questions(ModelStage):
    """Stage 5: the teacher sees only the crop and writes up to n questions; the object fans out."""

    name = "questions"
    reads = ("source", "object_index", "crop")
    writes = ("question_index", "n_questions", "question", "question_type")
    level_in, level_out = OBJECT, QUESTION

    def __init__(self, engine_config: EngineConfig, questions: QuestionsConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = questions
        self.schema = questions_schema(questions.n)
        self.seed_questions = load_seed_questions(questions.seed_file)

    def _prompt(self, row: dict) -> str:
        rng_seed = stable_seed("examples", source_key(row["source"]), row["object_index"], base_seed=self.engine_config.seed)
        examples = sample_examples(self.seed_questions, self.cfg.n_examples, rng_seed)
        return question_prompt(examples, self.cfg.n)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        requests = [
            ChatRequest([user_message(self._prompt(row), [self.fit(as_pil(row["crop"]))])],
                        sampling(self.cfg, self.seed(row)), self.schema, f"{row['source']}#{row['object_index']}")
            for row in rows
        ]
        return [self._questions(row, result) for row, result in zip(rows, self.chat(requests))]

    def _questions(self, row: dict, result) -> list[dict]:
        value = self.reply(row, result, self.schema)
        if value is None:
            return [row]
        items = [q for q in value["questions"] if str(q.get("question", "")).strip()][: self.cfg.n]
        if not items:
            return [self.drop(row, "no_questions", "the teacher returned no question for this crop")]
        out, seen = [], set()
        for i, item in enumerate(items):
            text = " ".join(item["question"].split())
            kid = child(row, i == 0, question_index=i, n_questions=len(items), question=text, question_type=item.get("type"))
            if normalize_answer(text) in seen:
                self.drop(kid, "duplicate_question", text)
            seen.add(normalize_answer(text))
            out.append(kid)
        return out
