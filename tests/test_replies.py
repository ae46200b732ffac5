"""Reading real-world model replies: broken tags, boxes, letters, options, numbering styles, garbage."""

from __future__ import annotations

import pytest

from zwz_ray.replies import (
    EXTRACTION_POLICIES,
    extract_answer,
    extract_boxed,
    locate_answer,
    normalize_answer,
    read_letter,
)
from zwz_ray.synth.stages.s02_proposal import clean_object_names
from zwz_ray.synth.stages.s03_grounding import parse_box

GARBAGE = [None, "", "   \n ", 42, ["a"], {"x"}, b"bytes"]

# --------------------------------------------------------------------------- object names


def test_clean_object_names_strips_markers_and_dedupes():
    raw = [
        "1. Red umbrella",
        "2) wall clock.",
        "(3) **Bicycle**",
        "- red UMBRELLA",
        "* 'street sign'",
        "• coffee mug;",
        "[7] fire hydrant",
        "#8 stop sign",
        "9 - kite",
        "10. Blue car: a car parked on the left",
        "x",
        "a" * 50,
        "b" * 49,
        None,
        12,
        "   ",
        "7-Up can",
        "3D printer",
        "2.5 inch screw",
    ]
    assert clean_object_names(raw) == [
        "Red umbrella",
        "wall clock",
        "Bicycle",
        "street sign",
        "coffee mug",
        "fire hydrant",
        "stop sign",
        "kite",
        "Blue car",
        "b" * 49,
        "7-Up can",
        "3D printer",
        "2.5 inch screw",
    ]


def test_clean_object_names_bounds_and_odd_input():
    assert clean_object_names(["ab", "a"], min_chars=2, max_chars=49) == ["ab"]
    assert clean_object_names(["abcd"], max_chars=3) == []
    assert clean_object_names("single name") == ["single name"]
    for bad in (None, 5, {"a": 1}):
        assert clean_object_names(bad) == []


# --------------------------------------------------------------------------- boxed and answers


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the answer is \boxed{5}.", "5"),
        (r"\boxed{3} ... wait, recount: \boxed{4}", "4"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\text{red}}", "red"),
        (r"\boxed{ {a} and {b} }", "{a} and {b}"),
        (r"\boxed {EXIT}", "EXIT"),
        (r"\boxed{7} then \boxed{unclosed", "7"),
        (r"\boxed{never closed", None),
        ("no box", None),
        (None, None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, answer, how",
    [
        ("<answer>B</answer>", "B", "tag"),
        ("Thinking...\n<answer>\n  red \n</answer>", "red", "tag"),
        ("<answer>1</answer> no wait <answer>2</answer>", "2", "tag"),
        ("<ANSWER>Blue</ANSWER>", "Blue", "tag"),
        ("The count is clear. <answer> 7 ", "7", "tag"),
        ("I put it in tags.\n5</answer>", "5", "tag"),
        (r"<answer>\boxed{C}</answer>", "C", "tag"),
        ("<answer>**red**</answer>", "red", "tag"),
        ("<answer></answer>", "", "empty"),
        (r"Counting gives \boxed{6} cups.", "6", "boxed"),
        ("Let me look.\nAnswer: 12\n", "12", "answer_line"),
        ("**Final Answer:** two", "two", "answer_line"),
        ("Reasoning here.\nThe answer is B.", "B.", "answer_line"),
        ("Answer: 3\nAnswer: 4", "4", "answer_line"),
        ("The image shows a cat.\n\n  A cat  \n\n", "A cat", "tail"),
        ("Answers vary by viewer.\nred", "red", "tail"),
        ("<answer>apple</answe", "apple", "tag"),  # cut off by max_tokens
        ("<answer>B</answer>\n<answer>", "B", "tag"),  # an empty last tag falls back to the closed one
        ("<answer>A</answer> hmm <answer>C", "C", "tag"),
        ('<answer>"apple"</answer>', "apple", "tag"),
        ("<answer>red   car\n</answer>", "red car", "tag"),
        ("<answer>6'</answer>", "6'", "tag"),  # a lone quote may be a unit (feet)
        ("\\boxed{unclosed\nAnswer: 4", "4", "answer_line"),
        ("", "", "empty"),
        ("   \n\t", "", "empty"),
        (None, "", "empty"),
    ],
)
def test_locate_answer(text, answer, how):
    assert locate_answer(text) == (answer, how)
    assert extract_answer(text) == (answer or None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>B</answer>", "B"),
        ("<answer>b</answer>", "B"),
        ("<answer>(C)</answer>", "C"),
        ("<answer>D. red</answer>", "D"),
        ("<answer>The answer is A</answer>", "A"),
        ('{"answer": "C"}', "C"),
        (r"\boxed{A}", "A"),
        ("Option B is correct.", "B"),
        ("I choose B) because the cap is blue.", "B"),
        ("<answer>**B**</answer>", "B"),
        ("<answer>B - blue</answer>", "B"),
        ("<answer>E</answer>", None),
        ("<answer>A cat on a mat</answer>", None),
        ("<answer>a blue cap</answer>", None),
        ("", None),
        (None, None),
    ],
)
def test_read_letter(text, expected):
    assert read_letter(text) == expected


def test_read_letter_by_option_text():
    options = ["red", "blue", "white", "black"]
    assert read_letter("<answer>Blue.</answer>", options=options) == "B"
    assert read_letter("<answer>green</answer>", options=options) is None
    assert read_letter("<answer>E</answer>", letters="ABCDE") == "E"


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "a, b",
    [
        ("5", "five"),
        ("5", "5.0"),
        ("5", " 5. "),
        ("Five", "FIVE!"),
        ("12", "a dozen"),
        ("12", "Dozen"),
        ("21", "twenty-one"),
        ("21", "twenty one"),
        ("1000", "1,000"),
        ("2.5", "2.50"),
        ("gray", "Grey"),
        ("dark gray", "dark-grey"),
        ("The red cup", "red cup"),
        ("an apple", "Apple."),
        ("3", "3 people"),
        ("4", "four items"),
        ("EXIT", "exit"),
        ("Coca-Cola", "coca cola"),
        ("ＡＢＣ", "abc"),
        ("50%", "50 percent"),
        ("zero", "0"),
        ("3 meters", "3m"),
        ("5 centimetres", "5cm"),
        ("30°", "30 degrees"),
        ("205", "two hundred five"),
        ("100", "a hundred"),
        ("24", "two dozen"),
        ("-3", "(-3)"),
    ],
)
def test_normalize_answer_equal(a, b):
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("5", "6"),
        ("5 cm", "5 m"),
        ("5 cm", "5"),
        ("navy", "blue"),
        ("light gray", "gray"),
        ("1.5", "15"),
        ("red", "reddish"),
        ("3 cats", "3"),
        ("007", "7"),
        ("-5", "5"),
        ("5-6", "56"),
        ("20 one", "21"),  # only runs of number words combine
        ("3m", "3 cm"),
    ],
)
def test_normalize_answer_different(a, b):
    assert normalize_answer(a) != normalize_answer(b)


def test_normalize_answer_edge_cases():
    assert normalize_answer(None) == ""
    assert normalize_answer("") == ""
    assert normalize_answer("...") == ""
    assert normalize_answer("A") == "a"  # a lone article is kept: it may be a letter or text
    assert normalize_answer("The") == "the"
    assert normalize_answer(5) == "5"
    assert normalize_answer("  Hello,   World!  ") == "hello world"
    assert normalize_answer("Café") == "café"
    assert normalize_answer("3.14") == "3.14"


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "obj, coords, expected",
    [
        ({"box": [10, 20, 110, 220]}, "absolute", (10, 20, 110, 220)),
        ({"box": [110, 220, 10, 20]}, "absolute", (10, 20, 110, 220)),
        ({"bbox_2d": [1, 2, 3, 4], "label": "cup"}, "absolute", (1, 2, 3, 4)),
        ([{"bbox_2d": [5, 6, 7, 8]}, {"bbox_2d": [0, 0, 1, 1]}], "absolute", (5, 6, 7, 8)),
        ([1, 2, 3, 4], "absolute", (1, 2, 3, 4)),
        ('```json\n[{"bbox_2d": [12, 34, 56, 78], "label": "cup"}]\n```', "absolute", (12, 34, 56, 78)),
        ('{"box": ["10", "20", "30", "40"]}', "absolute", (10, 20, 30, 40)),
        ("The cup is at [10, 20, 30, 40].", "absolute", (10, 20, 30, 40)),
        ("<|box_start|>(10,20),(30,40)<|box_end|>", "absolute", (10, 20, 30, 40)),
        ({"box": [0, 0, 500, 1000]}, "relative1000", (0, 0, 1000, 1500)),
        ({"box": [1000, 500, 0, 0]}, "relative1000", (0, 0, 2000, 750)),
    ],
)
def test_parse_box(obj, coords, expected):
    width, height = (2000, 1500)
    assert parse_box(obj, coords, width, height) == pytest.approx(expected)


@pytest.mark.parametrize(
    "obj",
    [*GARBAGE, {"box": [1, 2, 3]}, {"box": [1, 2, "x", 4]}, {"box": [1, 2, float("nan"), 4]},
     {"box": [True, 0, 1, 1]}, {"label": "cup"}, "[1, 2, 3]", [], [[[[[[1, 2, 3, 4]]]]]]],
)
def test_parse_box_garbage(obj):
    assert parse_box(obj, "absolute", 100, 100) is None


def test_parse_box_relative_needs_size_and_known_coords():
    assert parse_box([0, 0, 10, 10], "relative1000", None, None) is None
    assert parse_box([0, 0, 10, 10], "normalized", 100, 100) is None


# --------------------------------------------------------------------------- degenerate replies

DEGENERATE = {
    "open_braces": "{" * 20000,
    "open_strings": '{"a": "' * 5000,
    "single_quoted": "{'a': [" * 5000,
    "deep_json": '{"a":' * 3000 + "1" + "}" * 3000,
    "nested_braces": "{" * 5000 + "}" * 5000,
    "open_boxed": "\\boxed{" * 5000,
    "open_tags": "<answer>" * 5000,
    "close_tags": "</answer>" * 5000,
    "blank_after_valid": "valid" + " " * 20000 + "x",
    "blank_after_answer": "the answer is" + " " * 20000 + "\n",
    "fences": "```json\n{" * 3000,
    "markers": "1. " * 10000,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_replies_neither_raise_nor_hang(name):
    """A random or looping model can emit thousands of braces or blanks; parsing stays linear-ish."""
    text = DEGENERATE[name]
    for parse in (locate_answer, read_letter, parse_box, clean_object_names, normalize_answer, extract_boxed):
        parse(text)
    for policy in EXTRACTION_POLICIES:
        extract_answer(text, policy)


def test_evaluation_uses_the_same_extraction_and_normalisation():
    """Synthesis consensus and the evaluation judge must agree on what an answer is and when two match."""
    from zwz_ray.eval import stages as evaluation
    from zwz_ray.replies import judge_answer
    from zwz_ray.synth.stages import s08_consensus

    assert s08_consensus.normalize_answer is normalize_answer
    assert evaluation.judge_answer is judge_answer
    for text in ["<answer> five </answer>", "So \\boxed{7}.", "Final answer: **grey**", "", None, "<answer></answer>"]:
        assert extract_answer(text) == (locate_answer(text)[0] or None)


# --------------------------------------------------------------------------- extraction policies


@pytest.mark.parametrize(
    "policy, text, expected",
    [
        # default: the last tag, else \boxed{}, else the last "Answer:" line, else the last line
        ("default", "<answer>pear</answer> wait <answer>apple</answer>", "apple"),
        ("default", "Answer: 3\nAnswer: 4", "4"),
        ("default", "", None),
        # eval (reference protocol): the first closed tag, else from the first "Answer:" on, else the last 3 lines
        ("eval", "<answer>pear</answer> wait <answer>apple</answer>", "pear"),
        ("eval", "<ANSWER> red car </ANSWER>", "red car"),
        ("eval", "I looked.\nAnswer: 3\nAnswer: 4", "3 Answer: 4"),
        ("eval", "**Answer:** blue", "blue"),
        ("eval", "one\ntwo\nthree\nfour\n\nfive\n", "three four five"),
        ("eval", "only line", "only line"),
        ("eval", "<answer>unclosed", "<answer>unclosed"),
        ("eval", "  \n ", None),
        # grpo: the first closed tag, else the whole response; empty or >= 300 characters is no answer
        ("grpo", "<answer>B</answer> then <answer>C</answer>", "B"),
        ("grpo", "Thinking... so it is blue", "Thinking... so it is blue"),
        ("grpo", "<answer>   </answer>", None),
        ("grpo", "", None),
        ("grpo", None, None),
        ("grpo", "x" * 299, "x" * 299),
        ("grpo", "x" * 300, None),
        ("grpo", "<answer>" + "y" * 300 + "</answer>", None),
        # boxed (synthesis): the last \boxed{}
        ("boxed", r"\boxed{3} ... recount: \boxed{4}", "4"),
        ("boxed", r"\boxed{\text{red}}", "red"),
        ("boxed", "<answer>5</answer>", None),
        ("boxed", r"\boxed{}", None),
    ],
)
def test_extraction_policies(policy, text, expected):
    assert extract_answer(text, policy) == expected


def test_extraction_policies_are_named():
    assert EXTRACTION_POLICIES == ("default", "eval", "grpo", "boxed")
    with pytest.raises(ValueError, match="unknown extraction policy"):
        extract_answer("<answer>B</answer>", "strict")


def test_judge_answer_takes_the_policy():
    from zwz_ray.replies import judge_answer

    reply = "<answer>pear</answer> wait <answer>apple</answer>"
    assert judge_answer(reply, "apple").correct
    assert not judge_answer(reply, "apple", policy="eval").correct
    assert judge_answer("x" * 400, "x" * 400, policy="grpo").rule == "no_answer"


# --------------------------------------------------------------------------- options, one per line and inline

OPTION_LAYOUTS = {
    "(A) x": "(A) red\n(B) blue\n(C) green\n(D) yellow",
    "A) x": "A) red\nB) blue\nC) green\nD) yellow",
    "A. x": "A. red\nB. blue\nC. green\nD. yellow",
    "A: x": "A: red\nB: blue\nC: green\nD: yellow",
    "inline (A) x": "(A) red (B) blue (C) green (D) yellow",
    "inline A) x": "A) red B) blue C) green D) yellow",
    "inline A. x": "A. red B. blue C. green D. yellow",
    "inline A: x": "A: red B: blue C: green D: yellow",
}
INSTRUCTION = "Answer with the option's letter from the given choices directly."


@pytest.mark.parametrize("layout", sorted(OPTION_LAYOUTS))
@pytest.mark.parametrize("where", ["own_line", "question_line"])
def test_parse_options_layouts_before_an_instruction(layout, where):
    from zwz_ray.replies import parse_options

    sep = "\n" if where == "own_line" or not layout.startswith("inline") else " "
    question = f"Which colour is the cap?{sep}{OPTION_LAYOUTS[layout]}\n{INSTRUCTION}"
    assert parse_options(question) == {"A": "red", "B": "blue", "C": "green", "D": "yellow"}


@pytest.mark.parametrize("layout", sorted(OPTION_LAYOUTS))
@pytest.mark.parametrize("reply", ["<answer>yellow</answer>", "<answer>Yellow.</answer>", "yellow", "Yellow."])
def test_right_answer_as_option_text_is_decided_by_rule(layout, reply):
    from zwz_ray.replies import detect_mcq, judge_answer

    sep = " " if layout.startswith("inline") else "\n"
    question = f"Which colour is the cap?{sep}{OPTION_LAYOUTS[layout]}\n{INSTRUCTION}"
    is_mcq, options = detect_mcq(question, "D")
    verdict = judge_answer(reply, "D", is_mcq=is_mcq, options=options)
    assert (verdict.correct, verdict.rule) == (True, "mcq_option_text")
    wrong = judge_answer(reply.replace("ellow", "ELLOW").replace("yELLOW", "red").replace("YELLOW", "Red"), "D",
                         is_mcq=is_mcq, options=options)
    assert (wrong.correct, wrong.rule) == (False, "mcq_option_text")


def test_read_letter_is_the_judges_letter_reader():
    """The difficulty filter and the judge read letters the same way (ambiguity included)."""
    from zwz_ray.replies import choose

    assert read_letter("<answer>A or B</answer>") is None and choose("A or B", "ABCD") == (None, "ambiguous")
    assert read_letter("It is not A. The answer is (B).") == "B"
    assert read_letter("<answer>a cat</answer>", options={"A": "dog", "B": "cat"}, letters="AB") == "B"
    assert read_letter('```json\n{"answer": "C"}\n```') == "C"
