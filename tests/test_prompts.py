"""Golden snapshots of every prompt, and checks that every structured-output schema is bounded.

A prompt change shows up here as a diff. If the change is intended, rewrite the snapshots with
``ZWZ_UPDATE_GOLDEN=1 python -m pytest tests/test_prompts.py`` and bump ``PROMPT_VERSION``.
"""

from __future__ import annotations

import difflib
import json
import os
import random
from pathlib import Path

import jsonschema
import pytest

from zwz_ray import prompts
from zwz_ray.synth import stages as schemas

GOLDEN = Path(__file__).parent / "golden" / "prompts"
EXAMPLES = [
    "How many windows are on the front of the small white house?",
    "What word is written on the red sign above the shop entrance?",
]
QUESTION = "What color is the cap on the water bottle?"

RENDERED = {
    "student_prompt": lambda: prompts.student_prompt(QUESTION),
    "student_target": lambda: prompts.student_target(" blue "),
    "grpo": lambda: prompts.grpo_prompt(prompts.mcq_problem(prompts.overlay_question(QUESTION), ["red", "blue", "white", "black"])),
    "proposal": lambda: prompts.proposal_prompt(20),
    "grounding_query": lambda: prompts.grounding_query("  Red Umbrella. "),
    "vlm_grounding_absolute": lambda: prompts.vlm_grounding_prompt("red umbrella", "absolute"),
    "vlm_grounding_relative1000": lambda: prompts.vlm_grounding_prompt("red umbrella", "relative1000"),
    "question": lambda: prompts.question_prompt(EXAMPLES, n=3),
    "question_no_examples": lambda: prompts.question_prompt([], n=2),
    "validation": lambda: prompts.validation_prompt(QUESTION),
    "answer": lambda: prompts.answer_prompt(QUESTION),
    "equivalence": lambda: prompts.equivalence_prompt("How many birds are on the wire?", "5", "five"),
    "consensus": lambda: prompts.consensus_prompt("How many birds are on the wire?", ["5", "five", "", "6"]),
    "overlay_question": lambda: prompts.overlay_question(QUESTION),
    "distractor": lambda: prompts.distractor_prompt(QUESTION, "blue", n=3),
    "mcq_problem": lambda: prompts.mcq_problem(prompts.overlay_question(QUESTION), ["red", "blue", "white", "black"]),
    "judge_equivalence": lambda: prompts.judge_equivalence_prompt("How many birds are on the wire?", "5", "five birds"),
    "judge_yes_no": lambda: prompts.judge_yes_no_prompt("How many birds are on the wire?", "5", "five birds"),
    "reference_system": lambda: prompts.reference_system_prompt(),
    "zoom_agent_absolute": lambda: prompts.zoom_agent_prompt("absolute"),
    "zoom_agent_relative1000": lambda: prompts.zoom_agent_prompt("relative1000"),
    "zoom_result": lambda: prompts.zoom_result_prompt(3),
    "zoom_result_last_error": lambda: prompts.zoom_result_prompt(1, "no bbox_2d in the arguments"),
    "difficulty": lambda: prompts.difficulty_prompt(
        prompts.mcq_problem(prompts.overlay_question(QUESTION), ["red", "blue", "white", "black"])
    ),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_prompt_matches_golden(name):
    """Every prompt function in zwz_ray.prompts is rendered above (see test_every_prompt_is_snapshotted)."""
    text = RENDERED[name]()
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("ZWZ_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}; create it with ZWZ_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(), "golden", "current", lineterm=""))
        pytest.fail(
            f"prompt {name!r} changed:\n{diff}\n\nIf intended, run ZWZ_UPDATE_GOLDEN=1 python -m pytest "
            "tests/test_prompts.py and bump prompts.PROMPT_VERSION."
        )


def test_every_snapshot_has_a_prompt():
    stale = {p.stem for p in GOLDEN.glob("*.txt")} - set(RENDERED)
    assert not stale, f"snapshots without a prompt (delete them): {sorted(stale)}"


def test_prompts_are_clean():
    for name, render in RENDERED.items():
        text = render()
        assert text == text.strip() and all("  " not in line and line == line.strip() for line in text.splitlines()), name
        assert "\n\n\n" not in text, name
        assert "{" not in text.replace("\\boxed{}", "") or "JSON" in text, f"{name}: unformatted placeholder?"


def test_mcq_problem_letters_and_instruction():
    text = prompts.mcq_problem("Q?", ["x", "y", "z", "w"])
    assert text.splitlines() == ["Q?", "", "A. x", "B. y", "C. z", "D. w", "", prompts.MCQ_INSTRUCTION]
    compact = prompts.mcq_problem("Q?", ["x", "y"], "Pick one.", "\n", "({letter}) {text}")
    assert compact.splitlines() == ["Q?", "(A) x", "(B) y", "Pick one."]


def test_overlay_question_appends_red_box_instruction_after_a_blank_line():
    assert prompts.overlay_question(" Q? ") == f"Q?\n\n{prompts.RED_BOX_INSTRUCTION}"
    assert "inside the red bounding box" in prompts.RED_BOX_INSTRUCTION and "only" in prompts.RED_BOX_INSTRUCTION
    assert prompts.overlay_question("Q?", "Mind the box.", "\n") == "Q?\nMind the box."


def test_vlm_grounding_rejects_unknown_coords():
    with pytest.raises(ValueError, match="coords"):
        prompts.vlm_grounding_prompt("cup", "normalized")


def test_question_prompt_lists_every_type_and_example():
    text = prompts.question_prompt(EXAMPLES, n=3)
    assert all(t in text for t in prompts.QUESTION_TYPES) and "anomaly_detection" in prompts.QUESTION_TYPES
    assert all(e in text for e in EXAMPLES)
    assert "up to 3 questions" in text and "empty list" in text
    assert "yes/no" not in text.lower()  # the reference does not forbid yes/no questions


def test_question_prompt_cannot_be_told_the_object_name():
    import inspect

    assert list(inspect.signature(prompts.question_prompt).parameters) == ["examples", "n"]


def test_validation_prompt_states_criterion_four_fully_and_a_worked_example():
    text = prompts.validation_prompt(QUESTION)
    for phrase in ('"it"', '"this object"', "viewpoint", '"a lot"', '"some"', "step by step", "fails point"):
        assert phrase in text, phrase
    assert text.endswith(f'"{prompts.VERDICT_PREFIX} Yes" or "{prompts.VERDICT_PREFIX} No".')
    assert "300" not in text and "JSON" not in text  # free reasoning, no length cap


def test_consensus_prompt_numbers_every_answer():
    text = prompts.consensus_prompt("Q?", ["red", "", "crimson"])
    assert "1. red\n2. (no answer)\n3. crimson" in text and "count" in text and "reasoning" in text


def test_teacher_and_student_prompts_ask_for_a_box():
    for text in (prompts.answer_prompt(QUESTION), prompts.distractor_prompt(QUESTION, "blue"), prompts.difficulty_prompt("P")):
        assert "\\boxed{}" in text and "JSON" not in text


# --------------------------------------------------------------------------- seed questions


def test_seed_questions_cover_every_type():
    seeds = prompts.load_seed_questions()
    assert 60 <= len(seeds) <= 200
    assert len(set(seeds)) == len(seeds)
    assert all(q.endswith("?") and len(q) <= schemas.QUESTION_MAX_CHARS for q in seeds)
    headings = [ln[2:] for ln in prompts.SEED_QUESTIONS_FILE.read_text().splitlines() if ln.startswith("# ")]
    assert set(prompts.QUESTION_TYPES) <= set(headings)


def test_load_seed_questions_skips_comments_blanks_and_duplicates(tmp_path):
    path = tmp_path / "seeds.txt"
    path.write_text("# comment\n\nQ1?\n  Q2?  \nQ1?\n")
    assert prompts.load_seed_questions(path) == ["Q1?", "Q2?"]


def test_sample_examples_is_deterministic():
    seeds = prompts.load_seed_questions()
    a = prompts.sample_examples(seeds, k=15, rng_or_seed=7)
    assert a == prompts.sample_examples(seeds, k=15, rng_or_seed=7)
    assert a == prompts.sample_examples(seeds, k=15, rng_or_seed=random.Random(7))
    assert a != prompts.sample_examples(seeds, k=15, rng_or_seed=8)
    assert len(a) == len(set(a)) == 15 and set(a) <= set(seeds)
    assert sorted(prompts.sample_examples(["x", "y"], k=15)) == ["x", "y"]
    assert prompts.sample_examples([], k=15) == []
    np = pytest.importorskip("numpy")
    drawn = prompts.sample_examples(seeds, k=15, rng_or_seed=np.random.default_rng(3))
    assert drawn == prompts.sample_examples(seeds, k=15, rng_or_seed=np.random.default_rng(3)) and len(set(drawn)) == 15


# --------------------------------------------------------------------------- schemas

ALL_SCHEMAS = {
    "proposal": schemas.PROPOSAL_SCHEMA,
    "proposal_5": schemas.proposal_schema(5),
    "questions": schemas.QUESTIONS_SCHEMA,
    "questions_1": schemas.questions_schema(1),
    "equivalence": schemas.SYNTH_EQUIVALENCE_SCHEMA,
    "majority": schemas.majority_schema(8, ["red", "dark red"], 2000),
    "vlm_box": schemas.VLM_BOX_SCHEMA,
    "vlm_box_relative": schemas.vlm_box_schema("relative1000"),
}


def _unbounded(node, path="$"):
    """Paths of strings without maxLength/enum, arrays without maxItems, numbers without maximum."""
    found = []
    kind = node.get("type")
    if kind == "string" and "maxLength" not in node and "enum" not in node:
        found.append(path)
    if kind == "array":
        if "maxItems" not in node:
            found.append(path)
        found += _unbounded(node["items"], path + "[]")
    if kind in ("integer", "number") and "maximum" not in node:
        found.append(path)
    if kind == "object":
        assert node.get("additionalProperties") is False, path
        assert node["required"] == list(node["properties"]), path
        for key, sub in node["properties"].items():
            found += _unbounded(sub, f"{path}.{key}")
    return found


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
def test_schema_is_valid_and_bounded(name):
    schema = ALL_SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _unbounded(schema) == []


def test_property_order_puts_reasoning_first():
    assert list(schemas.majority_schema(8, ["x"], 10)["properties"]) == ["reasoning", "answer", "count"]


def _valid(schema, value):
    return jsonschema.Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize(
    "schema, good, bad",
    [
        (schemas.PROPOSAL_SCHEMA, {"objects": ["red cup", "wall clock"]}, {"objects": ["x"]}),
        (schemas.proposal_schema(1), {"objects": []}, {"objects": ["cup", "mug"]}),
        (schemas.PROPOSAL_SCHEMA, {"objects": ["cup"]}, {"objects": ["a" * 50]}),
        (schemas.QUESTIONS_SCHEMA, {"questions": [{"type": "ocr", "question": "What word is on the sign?"}]},
         {"questions": [{"type": "weather", "question": "What is the weather?"}]}),
        (schemas.QUESTIONS_SCHEMA, {"questions": []}, {"questions": [{"type": "ocr", "question": "Q" * 161}]}),
        (schemas.QUESTIONS_SCHEMA, {"questions": []},
         {"questions": [{"type": "ocr", "question": "What is it?"}] * 4}),
        (schemas.SYNTH_EQUIVALENCE_SCHEMA, {"same": "No"}, {"same": True}),
        (schemas.majority_schema(8, ["red"], 50), {"reasoning": "", "answer": "red", "count": 8},
         {"reasoning": "", "answer": "red", "count": 9}),
        (schemas.majority_schema(8, ["x" * 200], 50), {"reasoning": "r", "answer": "x" * 200, "count": 6},
         {"reasoning": "r", "answer": "x" * 301, "count": 6}),
        (schemas.VLM_BOX_SCHEMA, {"box": [10, 20, 300, 400]}, {"box": [10, 20, 300]}),
        (schemas.VLM_BOX_SCHEMA, {"box": [0, 0, 1, 1]}, {"box": [-1, 0, 1, 1]}),
        (schemas.vlm_box_schema("relative1000"), {"box": [0, 0, 1000, 1000]}, {"box": [0, 0, 1001, 10]}),
        (schemas.VLM_BOX_SCHEMA, {"box": [1, 2, 3, 4]}, {"box": [1.5, 2, 3, 4]}),
        (schemas.SYNTH_EQUIVALENCE_SCHEMA, {"same": "Yes"}, {"same": "Yes", "extra": 1}),
    ],
)
def test_schema_examples(schema, good, bad):
    assert _valid(schema, good)
    assert not _valid(schema, bad)


def test_vlm_box_schema_rejects_unknown_coords():
    with pytest.raises(ValueError, match="coords"):
        schemas.vlm_box_schema("normalized")


def test_schemas_compile_with_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    for name, schema in ALL_SCHEMAS.items():
        grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)
        assert grammar is not None, name


def test_every_prompt_is_snapshotted():
    import inspect

    functions = {n for n, f in inspect.getmembers(prompts, inspect.isfunction) if f.__module__ == prompts.__name__ and n.endswith("_prompt")}
    covered = {n for n in functions if any(n in inspect.getsource(fn) for fn in RENDERED.values())}
    assert functions == covered, f"prompts without a golden snapshot: {sorted(functions - covered)}"


# --------------------------------------------------------------------------- reply frames (grammars)


def test_reply_frames_accept_long_answers_and_only_their_frame():
    pytest.importorskip("xgrammar")
    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from zwz_ray.synth.stages.base import boxed_frame, verdict_frame

    ocr = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG - OPEN DAILY 9AM TO 5PM - " * 3
    assert len(ocr) > 200
    boxed = xgr.Grammar.from_ebnf(boxed_frame(2000, 300).text)
    assert accepts(boxed, f"The sign reads, line by line:\\boxed{{{ocr}}}")
    assert not accepts(boxed, "I think \\boxed{x" + "y" * 300 + "}")  # more than 300 characters in the box
    assert not accepts(boxed, "no box at all")
    three = xgr.Grammar.from_ebnf(boxed_frame(100, 40, boxes=3).text)
    assert accepts(three, "ok\\boxed{red}\n\\boxed{green}\n\\boxed{dark blue}")
    assert not accepts(three, "ok\\boxed{red}\n\\boxed{green}")
    letter = xgr.Grammar.from_ebnf(boxed_frame(100, 1, answer='"A" | "B" | "C" | "D"').text)
    assert accepts(letter, "Option C matches.\\boxed{C}") and not accepts(letter, "\\boxed{E}")
    verdict = xgr.Grammar.from_ebnf(verdict_frame(500).text)
    assert accepts(verdict, "1. yes 2. yes 3. yes 4. yes\nVALID: Yes") and not accepts(verdict, "\nVALID: Maybe")
