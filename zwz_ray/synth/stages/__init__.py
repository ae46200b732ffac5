"""The synthesis stages, one module per paper step, in the paper's order.

Each module holds its stage class, its pure logic and the schema of the model reply it reads:

    s01_image_pool   ImagePool (and select_images, the input list)
    s02_proposal     Proposal: objects that appear once (object-name cleaning)
    s03_grounding    Sam3Grounding / VLMGrounding: one box per object (box parsing)
    s04_crop         MicroCrop
    s05_questions    Questions, on the crop only
    s06_validation   Validation, on the full image and the crop
    s07_answers      Answers, one stage per answerer
    s08_consensus    Consensus (normaliser first, then an optional text judge)
    s09_overlay      Overlay: the red box on the full image
    s10_mcq          Distractors and MCQAssembly
    s11_difficulty   Difficulty: the student's K tries
    s12_output       OutputRows: ids and provenance

:mod:`.base` holds the :class:`Stage` / :class:`ModelStage` base classes; prompts live in
:mod:`zwz_ray.prompts`.
"""

from __future__ import annotations

from zwz_ray.synth.stages.base import IMAGE, OBJECT, QUESTION, MissingColumnsError, ModelStage, Stage
from zwz_ray.synth.stages.s01_image_pool import ImagePool, select_images
from zwz_ray.synth.stages.s02_proposal import NAME_MAX_CHARS, NAME_MIN_CHARS, PROPOSAL_SCHEMA, Proposal, proposal_schema
from zwz_ray.synth.stages.s03_grounding import VLM_BOX_SCHEMA, Sam3Grounding, VLMGrounding, vlm_box_schema
from zwz_ray.synth.stages.s04_crop import MicroCrop
from zwz_ray.synth.stages.s05_questions import QUESTION_MAX_CHARS, QUESTIONS_SCHEMA, Questions, questions_schema
from zwz_ray.synth.stages.s06_validation import VALIDATION_SCHEMA, Validation
from zwz_ray.synth.stages.s07_answers import ANSWER_MAX_CHARS, ANSWER_SCHEMA, Answers
from zwz_ray.synth.stages.s08_consensus import SYNTH_EQUIVALENCE_SCHEMA, Consensus
from zwz_ray.synth.stages.s09_overlay import Overlay
from zwz_ray.synth.stages.s10_mcq import DISTRACTOR_SCHEMA, Distractors, MCQAssembly, distractor_schema
from zwz_ray.synth.stages.s11_difficulty import DIFFICULTY_SCHEMA, Difficulty, difficulty_schema
from zwz_ray.synth.stages.s12_output import OutputRows

__all__ = [
    "ANSWER_MAX_CHARS", "ANSWER_SCHEMA", "DIFFICULTY_SCHEMA", "DISTRACTOR_SCHEMA", "IMAGE", "NAME_MAX_CHARS", "NAME_MIN_CHARS",
    "OBJECT", "PROPOSAL_SCHEMA", "QUESTION", "QUESTIONS_SCHEMA", "QUESTION_MAX_CHARS", "SYNTH_EQUIVALENCE_SCHEMA",
    "VALIDATION_SCHEMA", "VLM_BOX_SCHEMA", "Answers", "Consensus", "Difficulty", "Distractors", "ImagePool", "MCQAssembly",
    "MicroCrop", "MissingColumnsError", "ModelStage", "OutputRows", "Overlay", "Proposal", "Questions", "Sam3Grounding",
    "Stage", "VLMGrounding", "Validation", "difficulty_schema", "distractor_schema", "proposal_schema", "questions_schema",
    "select_images", "vlm_box_schema",
]
