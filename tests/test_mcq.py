"""Stage 10 multiple choice: seeded shuffles, uniform letters, distractor cleaning."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import zwz_ray
from zwz_ray.prompts import MCQ_INSTRUCTION, overlay_question
from zwz_ray.synth.stages.base import stable_seed
from zwz_ray.synth.stages.s10_mcq import MCQ, build_mcq, clean_distractors, index_of, letter_of

ROOT = str(Path(zwz_ray.__file__).resolve().parents[1])
QUESTION = overlay_question("What color is the cap on the water bottle?")


def test_stable_seed_is_stable_and_distinct():
    assert stable_seed("img.jpg", 3) == stable_seed("img.jpg", 3)
    assert stable_seed("img.jpg", 3) != stable_seed("img.jpg", 4)
    assert stable_seed("a", "bc") != stable_seed("ab", "c")
    assert stable_seed("x", base_seed=1) != stable_seed("x", base_seed=2)
    assert 0 <= stable_seed("x") < 2**63


def test_stable_seed_is_the_same_in_another_process():
    code = "from zwz_ray.synth.stages.base import stable_seed; print(stable_seed('img.jpg', 3, base_seed=7))"
    env_seeds = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        env_seeds.append(int(out.stdout))
    assert env_seeds == [stable_seed("img.jpg", 3, base_seed=7)] * 2


def test_build_mcq_shape():
    mcq = build_mcq(QUESTION, "blue", ["red", "white", "black"], seed=1)
    assert isinstance(mcq, MCQ)
    assert sorted(mcq.options) == ["black", "blue", "red", "white"]
    assert mcq.options[mcq.correct_index] == "blue"
    assert mcq.answer_letter == "ABCD"[mcq.correct_index]
    lines = mcq.problem.splitlines()
    assert lines[:2] == QUESTION.splitlines()
    assert lines[2:6] == [f"{letter}. {opt}" for letter, opt in zip("ABCD", mcq.options)]
    assert lines[6] == MCQ_INSTRUCTION


def test_build_mcq_is_deterministic_per_seed():
    a = build_mcq(QUESTION, "blue", ["red", "white", "black"], seed=stable_seed("img", 0))
    b = build_mcq(QUESTION, "blue", ["red", "white", "black"], seed=stable_seed("img", 0))
    assert a == b
    orders = {tuple(build_mcq(QUESTION, "blue", ["red", "white", "black"], seed=s).options) for s in range(50)}
    assert len(orders) > 10


def test_correct_letter_is_spread_uniformly():
    letters = Counter(
        build_mcq(QUESTION, "blue", ["red", "white", "black"], seed=stable_seed("img.jpg", i)).answer_letter
        for i in range(400)
    )
    assert set(letters) == set("ABCD")
    for letter, count in letters.items():
        assert 0.15 <= count / 400 <= 0.35, (letter, letters)


def test_clean_distractors():
    assert clean_distractors("blue", ["Blue", "red", " red ", "", None, "navy", "BLUE.", "white", "black"]) == [
        "red", "navy", "white",
    ]
    assert clean_distractors("5", ["five", "5.0", "6", "seven", 8, True]) == ["6", "seven", "8"]
    assert clean_distractors("5", ["6", "7"], n=3) == ["6", "7"]
    assert clean_distractors("5", None) == []
    assert clean_distractors("red", ["dark   red", "green"]) == ["dark red", "green"]


def test_build_mcq_cleans_and_keeps_only_n():
    mcq = build_mcq(QUESTION, "5", ["five", "6", "7", "7.0", "8", "9"], seed=0)
    assert sorted(mcq.options) == ["5", "6", "7", "8"]


def test_too_few_distractors():
    with pytest.raises(ValueError, match="too_few_distractors"):
        build_mcq(QUESTION, "blue", ["red", "Blue", "red."], seed=0)
    with pytest.raises(ValueError, match="too_few_distractors"):
        build_mcq(QUESTION, "blue", [], seed=0)


def test_other_option_counts():
    mcq = build_mcq(QUESTION, "blue", ["red"], seed=3, n=1)
    assert len(mcq.options) == 2 and mcq.answer_letter in "AB"


def test_letters():
    assert [letter_of(i) for i in range(4)] == list("ABCD")
    assert [index_of(x) for x in ("A", "b", " C ", "D")] == [0, 1, 2, 3]
    for bad in ("", "AB", "1", "?"):
        with pytest.raises(ValueError):
            index_of(bad)
    with pytest.raises(ValueError):
        letter_of(-1)
