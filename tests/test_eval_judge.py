"""The judging cascade: extraction, normalisation, MCQ letters and option text, LLM judge parsing."""

from __future__ import annotations

import pytest

from zwz_ray.judge import LLMJudge, parse_equivalence
from zwz_ray.replies import detect_mcq, extract_answer, judge_answer, normalize_answer, parse_options

MCQ_Q = "What colour is the car?\n(A) red\n(B) blue\n(C) dark red\n(D) green\nAnswer with the option's letter."
ANIMAL_Q = "Which animal is on the sign?\nA. dog\nB. cat\nC. horse\nD. bird"

# (question, response, answer, expected correct, expected rule)
CASES = [
    # --- MCQ letters
    (MCQ_Q, "<answer>B</answer>", "B", True, "exact"),
    (MCQ_Q, "<answer>(B)</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>B.</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>B)</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>b</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>B. blue</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>(B) blue</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "The car looks bluish. The answer is B", "B", True, "exact"),
    (MCQ_Q, "the answer is b.", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>Option B</answer>", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>**B**</answer>", "B", True, "exact"),
    (MCQ_Q, "<answer>C</answer>", "B", False, "mcq_letter"),
    (MCQ_Q, "Answer: D", "B", False, "mcq_letter"),
    (MCQ_Q, "<answer>(B)</answer>", "(B)", True, "exact"),
    (MCQ_Q, "<answer>B</answer>", "(B)", True, "mcq_letter"),
    # letter inside a word must not count
    (MCQ_Q, "<answer>Blue</answer>", "B", True, "mcq_option_text"),
    (MCQ_Q, "<answer>Bus</answer>", "B", False, "undecided"),
    # option text instead of the letter; longest option wins over a contained one
    (MCQ_Q, "<answer>blue</answer>", "B", True, "mcq_option_text"),
    (MCQ_Q, "<answer>dark red</answer>", "C", True, "mcq_option_text"),
    (MCQ_Q, "<answer>The car is dark red.</answer>", "A", False, "mcq_option_text"),
    (MCQ_Q, "<answer>red</answer>", "C", False, "mcq_option_text"),
    # "A" the letter vs "a" the article
    (ANIMAL_Q, "<answer>a cat</answer>", "A", False, "mcq_option_text"),
    (ANIMAL_Q, "<answer>A cat</answer>", "B", True, "mcq_option_text"),
    (ANIMAL_Q, "<answer>A</answer>", "A", True, "exact"),
    (ANIMAL_Q, "<answer>A is correct</answer>", "A", True, "mcq_letter"),
    # several letters, negation
    (MCQ_Q, "<answer>A or B</answer>", "B", False, "undecided"),
    (MCQ_Q, "<answer>B, C</answer>", "B", False, "undecided"),
    (MCQ_Q, "<answer>not B</answer>", "B", False, "undecided"),
    (MCQ_Q, "It is not A. The answer is (B).", "B", True, "mcq_letter"),
    (MCQ_Q, "<answer>Not C, so D</answer>", "D", True, "mcq_letter"),
    # --- open answers: numbers
    ("How many dots?", "<answer>5</answer>", "5", True, "exact"),
    ("How many dots?", "<answer>five</answer>", "5", True, "normalized"),
    ("How many dots?", "<answer>5.0</answer>", "5", True, "normalized"),
    ("How many dots?", "<answer>Five.</answer>", "five", True, "normalized"),
    ("How many dots?", "<answer>There are 5 dots.</answer>", "5", True, "normalized"),
    ("How many dots?", "<answer>6</answer>", "five", False, "normalized"),
    ("How many dots?", "<answer>twenty-five</answer>", "25", True, "normalized"),
    ("How many dots?", "<answer>between 4 and 6</answer>", "5", False, "undecided"),
    # --- open answers: text, units, colours
    ("What word is on the sign?", "<answer>EXIT</answer>", "exit", True, "normalized"),
    ("What colour is the roof?", "<answer>The roof is grey</answer>", "gray", False, "undecided"),
    ("What colour is the roof?", "<answer>Grey.</answer>", "gray", True, "normalized"),
    ("How tall?", "<answer>3 meters</answer>", "3m", True, "normalized"),
    ("What is it?", "<answer>an apple</answer>", "apple", True, "normalized"),
    ("What is it?", "<answer>pear</answer>", "apple", False, "undecided"),
    # --- extraction edge cases
    ("What is it?", "", "apple", False, "no_answer"),
    ("What is it?", None, "apple", False, "no_answer"),
    ("What is it?", "   \n ", "apple", False, "no_answer"),
    ("What is it?", "<answer></answer>", "apple", False, "no_answer"),
    ("What is it?", "<answer>\n   apple \n</answer>", "apple", True, "exact"),
    ("What is it?", "I think... <answer> apple", "apple", True, "exact"),
    ("What is it?", "<answer>apple</answe", "apple", True, "exact"),
    ("What is it?", "<ANSWER>Apple</ANSWER>", "apple", True, "normalized"),
    ("What is it?", "<answer>pear</answer> wait <answer>apple</answer>", "apple", True, "exact"),
    ("What is it?", "Let me look.\nFinal answer: apple", "apple", True, "exact"),
    ("What is it?", "Let me look closely at the fruit.\napple", "apple", True, "exact"),
    ("How many?", "So the result is \\boxed{7}.", "7", True, "exact"),
    ("How many?", "<answer>7</answer>\n<answer>", "7", True, "exact"),
    ("What temperature?", "<answer>-5</answer>", "5", False, "normalized"),
    ("How many?", "<answer>two dozen</answer>", "24", True, "normalized"),
]


@pytest.mark.parametrize("question,response,answer,correct,rule", CASES)
def test_cascade_table(question, response, answer, correct, rule):
    is_mcq, options = detect_mcq(question, answer)
    verdict = judge_answer(response, answer, is_mcq=is_mcq, options=options)
    assert (verdict.correct, verdict.rule) == (correct, rule), verdict


def test_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    "text,expected",
    [("<answer> B </answer>", "B"), ("<answer>\n\nred car\n</answer>", "red car"), ("no tags at all\n\n", "no tags at all"),
     ("Answer: 12 apples", "12 apples"), ("**Answer:** blue", "blue")],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "a,b", [("Five", "5"), ("5.0", "5"), ("The Apple!", "apple"), ("  dark   grey ", "dark gray"), ("1,000", "1000"), ("10 %", "10 percent")]
)
def test_normalize_equal(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_keeps_a_lone_article_and_decimals():
    assert normalize_answer("A") == "a"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("3.50 kg") == "3.5 kg"


def test_parse_options_layouts():
    assert parse_options(MCQ_Q) == {"A": "red", "B": "blue", "C": "dark red", "D": "green"}
    assert parse_options("Pick one: (A) cat (B) dog (C) cow") == {"A": "cat", "B": "dog", "C": "cow"}
    assert parse_options("A) one\nB) two") == {"A": "one", "B": "two"}
    assert parse_options("Options: A. red car B. blue C. green") == {"A": "red car", "B": "blue", "C": "green"}
    assert parse_options("What does (A) mean?") == {}
    assert parse_options("Is this a car? Answer yes or no.") == {}


def test_detect_mcq_sources():
    assert detect_mcq("q", "B", ["red", "blue"]) == (True, {"A": "red", "B": "blue"})
    assert detect_mcq("q", "blue", ["A. red", "B. blue"]) == (True, {"A": "red", "B": "blue"})
    assert detect_mcq("How many?", "C", None) == (True, {})
    assert detect_mcq("Which letter is painted on the sign?", "K", None) == (False, {})
    assert detect_mcq("How many?", "5", None) == (False, {})


def test_mcq_without_parsed_options_uses_letters():
    verdict = judge_answer("<answer>(C)</answer>", "C", is_mcq=True, options={})
    assert (verdict.correct, verdict.rule) == (True, "mcq_letter")


@pytest.mark.parametrize(
    "text,expected",
    [('{"equivalent": true}', True), ('```json\n{"equivalent": false}\n```', False), ("Yes", True), ("no", False), ("???", None), ("", None)],
)
def test_parse_equivalence(text, expected):
    assert parse_equivalence(text) is expected


class _ScriptedEngine:
    """Stands in for a text model in this unit test only: answers from a script."""

    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def chat(self, requests):
        from zwz_ray.engines import ChatResult

        self.seen.extend(requests)
        return [ChatResult(texts=[self.replies.pop(0)]) for _ in requests]


def test_llm_judge_sends_schema_and_parses():
    engine = _ScriptedEngine(['{"equivalent": true}', "garbage"])
    rows = [{"id": "1", "view": "global", "question": "q?", "answer": "gray", "extracted": "the roof is grey"}] * 2
    decisions = LLMJudge(engine).decide(rows)
    assert [d[0] for d in decisions] == [True, None]
    assert engine.seen[0].json_schema["required"] == ["equivalent"]
    assert "the roof is grey" in engine.seen[0].messages[0]["content"][-1]["text"]
