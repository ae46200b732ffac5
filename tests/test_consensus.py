"""Stage 8 consensus: normaliser grouping, the 6-of-8 threshold, judge merges, ties, empties."""

from __future__ import annotations

import pytest

from zwz_ray.synth.stages.s08_consensus import ConsensusResult, consensus, group_answers, keep, representative


def colour_judge(calls: list):
    """A deterministic stand-in for the LLM judge: answers are the same when they share a word group."""
    families = [{"navy", "blue", "navy blue", "dark blue"}, {"charcoal", "dark gray", "dark grey"}]

    def same(pairs):
        calls.append(list(pairs))
        return [any(a.lower() in f and b.lower() in f for f in families) for a, b in pairs]

    return same


def test_number_spellings_form_one_group():
    groups, used = group_answers(["5", "five", "5.0", "Five.", "6"])
    assert groups == [[0, 1, 2, 3], [4]] and used is False


def test_six_of_eight_keeps_five_of_eight_drops():
    kept = consensus(["5", "five", "5", "5.0", "5", "5", "6", "7"])
    assert kept.fraction == 6 / 8 and keep(kept, 0.75)
    assert kept.answer == "5" and kept.n == 8 and kept.group_sizes == [6, 1, 1]
    dropped = consensus(["5", "five", "5", "5.0", "5", "6", "6", "7"])
    assert dropped.fraction == 5 / 8 and not keep(dropped, 0.75)


def test_answer_is_the_most_common_spelling():
    result = consensus(["five", "5", "5", "Five", "5"])
    assert result.answer == "5"
    assert representative(["Red", "red", "red ", "Red"], [0, 1, 2, 3]) == "Red"  # tie: earliest


def test_judge_merges_groups_in_one_call():
    calls: list = []
    answers = ["navy", "blue", "navy", "dark blue", "blue", "navy blue", "red", "navy"]
    result = consensus(answers, same=colour_judge(calls), judge_when_needed=False)
    assert len(calls) == 1 and len(calls[0]) == 5 * 4 // 2  # five normaliser groups, every pair once
    assert result.group_sizes == [7, 1] and result.fraction == 7 / 8
    assert result.answer == "navy" and result.decided_by == "judge"
    assert result.groups == [[0, 1, 2, 3, 4, 5, 7], [6]]
    assert keep(result)


def test_judge_merges_are_transitive():
    # The judge links a~b and b~c but says a != c; union-find still puts all three together.
    def chain(pairs):
        linked = {("a1", "b2"), ("b2", "c3")}
        return [(a, b) in linked or (b, a) in linked for a, b in pairs]

    groups, used = group_answers(["a1", "b2", "c3", "d4"], same=chain)
    assert used and groups == [[0, 1, 2], [3]]


def test_judge_is_skipped_when_it_cannot_change_the_outcome():
    calls: list = []
    judge = colour_judge(calls)
    settled = consensus(["5"] * 7 + ["6"], same=judge)  # 7/8 already kept
    hopeless = consensus(["a", "b", "", "", "", "", "", ""], same=judge)  # 2/8 at best
    single = consensus(["red"] * 8, same=judge)
    assert calls == []
    assert settled.decided_by == hopeless.decided_by == single.decided_by == "normalizer"
    needed = consensus(["navy"] * 4 + ["blue"] * 4, same=judge)
    assert len(calls) == 1 and needed.fraction == 1.0 and needed.decided_by == "judge"


def test_judge_that_says_no_changes_nothing():
    answers = ["red", "red", "red", "red", "blue", "blue", "green", "green"]
    result = consensus(answers, same=lambda pairs: [False] * len(pairs))
    assert result.group_sizes == [4, 2, 2] and result.decided_by == "normalizer"


def test_judge_with_wrong_number_of_flags_is_an_error():
    with pytest.raises(ValueError, match="flags"):
        group_answers(["a", "b", "c"], same=lambda pairs: [True])


def test_ties_are_broken_by_first_appearance():
    for answers in (["red", "blue", "blue", "red"], ["red", "blue", "red", "blue"]):
        assert consensus(answers).answer == "red"
    assert consensus(["blue", "red", "red", "blue"]).answer == "blue"
    assert consensus(["x", "y"]) == consensus(["x", "y"])


def test_empty_answers_count_but_never_group():
    result = consensus(["5", "", None, "  ", "5", "...", "5", "5"])
    assert result.n == 8 and result.group_sizes == [4] and result.fraction == 0.5
    assert result.groups == [[0, 4, 6, 7]]


def test_no_answers_at_all():
    for answers in ([], ["", None]):
        result = consensus(answers)
        assert result.answer is None and result.fraction == 0.0 and not keep(result)
    assert isinstance(consensus([]), ConsensusResult)


def test_threshold_is_configurable():
    result = consensus(["a", "a", "a", "b"])
    assert keep(result, 0.75) and not keep(result, 0.8)
    assert keep(consensus(["a", "b"]), 0.5)
