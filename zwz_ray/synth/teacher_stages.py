"""The teacher's stages: object proposal (2), question generation (5), question validation (6)
and multiple-choice distractors (10). Each sends one structured-output request per row.
"""

from __future__ import annotations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, SamplingParams, as_pil, user_message
from zwz_ray.parsing import clean_object_names, normalize_answer
from zwz_ray.prompts import (
    distractor_prompt,
    load_seed_questions,
    proposal_prompt,
    question_prompt,
    sample_examples,
    validation_prompt,
)
from zwz_ray.synth.columns import child
from zwz_ray.synth.config import InputConfig, MCQConfig, ProposalConfig, QuestionsConfig, ValidationConfig
from zwz_ray.synth.mcq import stable_seed
from zwz_ray.synth.schemas import VALIDATION_SCHEMA, distractor_schema, proposal_schema, questions_schema
from zwz_ray.synth.stage import IMAGE, OBJECT, QUESTION, ModelStage, SourceImages


def _sampling(cfg, seed: int, n: int = 1) -> SamplingParams:
    return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed)


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
                requests.append(ChatRequest([message], _sampling(self.cfg, self.seed(row)), self.schema, row["source"]))
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


class Questions(ModelStage):
    """Stage 5: the teacher sees only the crop and writes up to n questions; the object fans out."""

    name = "questions"
    reads = ("source", "object_index", "object_name", "crop")
    writes = ("question_index", "n_questions", "question", "question_type")
    level_in, level_out = OBJECT, QUESTION

    def __init__(self, engine_config: EngineConfig, questions: QuestionsConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = questions
        self.schema = questions_schema(questions.n)
        self.seed_questions = load_seed_questions(questions.seed_file)

    def _prompt(self, row: dict) -> str:
        rng_seed = stable_seed("examples", row["source"], row["object_index"], base_seed=self.engine_config.seed)
        examples = sample_examples(self.seed_questions, self.cfg.n_examples, rng_seed)
        return question_prompt(examples, self.cfg.n, row["object_name"])

    def process(self, rows: list[dict]) -> list[list[dict]]:
        requests = [
            ChatRequest([user_message(self._prompt(row), [self.fit(as_pil(row["crop"]))])],
                        _sampling(self.cfg, self.seed(row)), self.schema, f"{row['source']}#{row['object_index']}")
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
            requests.append(ChatRequest([message], _sampling(self.cfg, self.seed(row)), VALIDATION_SCHEMA))
        for row, result in zip(asked, self.chat(requests)):
            value = self.reply(row, result, VALIDATION_SCHEMA)
            if value is None:
                continue
            row["validation_reason"] = value["reason"]
            if value["valid"] != "Yes":
                self.drop(row, "invalid_question", value["reason"])
        return [[row] for row in rows]


class Distractors(ModelStage):
    """Stage 10, first half: the teacher writes wrong options while looking at the overlay image."""

    name = "distractors"
    reads = ("image", "question", "answer_text")
    writes = ("distractors",)
    level_in = level_out = QUESTION

    def __init__(self, engine_config: EngineConfig, mcq: MCQConfig, **kw):
        super().__init__(engine_config, **kw)
        self.cfg = mcq
        self.schema = distractor_schema(mcq.n_distractors)

    def process(self, rows: list[dict]) -> list[list[dict]]:
        requests = [
            ChatRequest([user_message(distractor_prompt(row["question"], row["answer_text"], self.cfg.n_distractors),
                                      [self.fit(as_pil(row["image"]))])],
                        _sampling(self.cfg, self.seed(row)), self.schema)
            for row in rows
        ]
        for row, result in zip(rows, self.chat(requests)):
            value = self.reply(row, result, self.schema)
            if value is not None:
                row["distractors"] = [str(v) for v in value["options"]]
        return [[row] for row in rows]
