"""Stage 8: answer consensus across teacher samples.

The question is kept when the largest group of equivalent answers holds at least ``threshold``
of all samples (paper: 0.75, i.e. 6 of 8). Empty answers never join a group but count in ``n``.
First pass, always: exact equality after :func:`normalize_answer` (cheap, deterministic). When
that already decides (the winner is settled, or no merge could reach the threshold), no judge is
asked and the group's most common spelling is the answer. Otherwise ``consensus.mode`` says:

* ``holistic`` (the reference): ONE judge call per question sees all samples, reasons, and
  returns the majority answer as one normalised string plus its count. The reply is guarded: the
  string must equal at least one sample under the normaliser and the count must lie between the
  largest exact-match group (its own included) and the number of non-empty samples. A reply that fails the guard is
  not trusted: the row falls back to the normaliser's groups, ``consensus_by`` says
  ``judge_rejected`` and the stage's ``judge_rejected`` flag counts it in stats.json.
* ``pairwise`` (ours, kept as an option): the judge compares one representative per group
  pairwise (every pair of a batch in one engine call) and groups it calls the same are merged
  transitively. Cheap per call but it can chain near-colours ("dark brown" ~ "brown" ~ "light
  brown") into one group.
* ``normalizer``: no judge at all (also what happens when ``models.judge`` is null).

Early stop (``consensus.early_stop``): :func:`early_drop` is this stage's rule applied before all
samples exist. A later answerer stage (stage 7) asks it, per question, whether the samples so far
already rule the question out, and skips the question if so; here it is then dropped as
``no_consensus`` like any other (the missing samples are padded with "" and count against; the
detail says how many were drawn). A question is never KEPT early: that would change its
``consistency`` and possibly its majority spelling. With 4 + 4 samples and 6 needed, a question is
skipped after the first answerer when no answer has 2 votes (normaliser bound), or, when a judge
will see the samples, when at most one of the 4 is non-empty (a judge can merge spellings, never
create votes: :func:`_judge_can_matter` then finds it hopeless, so the judge would not be asked).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

from zwz_ray.config import EngineConfig
from zwz_ray.engines import ChatRequest, Engine, SamplingParams, user_message
from zwz_ray.prompts import consensus_prompt, equivalence_prompt
from zwz_ray.replies import normalize_answer
from zwz_ray.synth.config import ConsensusConfig
from zwz_ray.synth.stages.base import QUESTION, Stage, bounded_string, json_object, parse_reply, yes_no

DEFAULT_THRESHOLD = 0.75
# The stage-8 judge's reply: are two teacher answers the same? (The evaluation judge has its own.)
SYNTH_EQUIVALENCE_SCHEMA = json_object(same=yes_no())

# Judge callback: pairs of answers -> one "same?" flag per pair, in order.
SameFn = Callable[[list[tuple[str, str]]], list[bool]]


@dataclass
class ConsensusResult:
    answer: str | None
    fraction: float
    group_sizes: list[int] = field(default_factory=list)
    n: int = 0
    decided_by: str = "normalizer"  # "normalizer" | "judge" | "judge_rejected"
    groups: list[list[int]] = field(default_factory=list)
    note: str = ""  # why a judge reply was rejected


def _normalizer_groups(answers: list) -> list[list[int]]:
    by_key: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        key = normalize_answer(a) if isinstance(a, str) else ""
        if key:
            by_key.setdefault(key, []).append(i)
    return list(by_key.values())  # ordered by first occurrence


def representative(answers: list, group: list[int]) -> str:
    """The group's most common original spelling (stripped); ties go to the earliest."""
    spellings = [answers[i].strip() for i in group]
    counts = Counter(spellings)
    return max(spellings, key=lambda s: (counts[s], -spellings.index(s)))


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _merge(groups: list[list[int]], pairs: list[tuple[int, int]], flags: list[bool]) -> list[list[int]]:
    parent = list(range(len(groups)))
    for (a, b), same in zip(pairs, flags):
        if same:
            ra, rb = _find(parent, a), _find(parent, b)
            parent[max(ra, rb)] = min(ra, rb)
    merged: dict[int, list[int]] = {}
    for g, members in enumerate(groups):
        merged.setdefault(_find(parent, g), []).extend(members)
    return sorted((sorted(m) for m in merged.values()), key=lambda m: m[0])


def group_answers(answers: list, same: SameFn | None = None) -> tuple[list[list[int]], bool]:
    """Groups of answer indices and whether the judge was consulted.

    Groups are ordered by their first member. ``same`` receives every pair of group
    representatives in one call and must return one bool per pair.
    """
    groups = _normalizer_groups(answers)
    if same is None or len(groups) < 2:
        return groups, False
    index_pairs = list(combinations(range(len(groups)), 2))
    reps = [representative(answers, g) for g in groups]
    flags = list(same([(reps[a], reps[b]) for a, b in index_pairs]))
    if len(flags) != len(index_pairs):
        raise ValueError(f"judge callback returned {len(flags)} flags for {len(index_pairs)} pairs")
    return _merge(groups, index_pairs, [bool(f) for f in flags]), True


def _largest(groups: list[list[int]]) -> list[int] | None:
    # Ties: the group whose first member came first (groups are ordered that way).
    return max(groups, key=len) if groups else None


def _judge_can_matter(groups: list[list[int]], n: int, threshold: float) -> bool:
    """False when merging cannot change the keep decision or the winner."""
    sizes = sorted((len(g) for g in groups), reverse=True)
    if len(sizes) < 2:
        return False
    settled = threshold > 0.5 and sizes[0] >= threshold * n  # no rival can outgrow the winner
    hopeless = sum(sizes) < threshold * n  # even merging everything would not reach it
    return not (settled or hopeless)


def consensus(answers: list, threshold: float = DEFAULT_THRESHOLD, same: SameFn | None = None,
              judge_when_needed: bool = True) -> ConsensusResult:
    """The majority answer and its share of all samples.

    With ``judge_when_needed`` the judge is skipped when its verdicts could not change whether
    the question is kept or which answer wins (then ``fraction`` is the normaliser's).
    """
    n = len(answers)
    groups = _normalizer_groups(answers)
    if same is not None and (not judge_when_needed or _judge_can_matter(groups, n, threshold)):
        before = {tuple(g) for g in groups}
        groups, _ = group_answers(answers, same)
    else:
        before = None
    best = _largest(groups)
    if best is None:
        return ConsensusResult(answer=None, fraction=0.0, n=n)
    decided_by = "judge" if before is not None and tuple(best) not in before else "normalizer"
    return ConsensusResult(
        answer=representative(answers, best),
        fraction=len(best) / n,
        group_sizes=sorted((len(g) for g in groups), reverse=True),
        n=n,
        decided_by=decided_by,
        groups=groups,
    )


def reaches(fraction: float, threshold: float) -> bool:
    """The one threshold comparison of stage 8 (small tolerance for float round-off)."""
    return fraction >= threshold - 1e-9


def keep(result: ConsensusResult, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether the question survives stage 8."""
    return result.answer is not None and reaches(result.fraction, threshold)


def needed_votes(n: int, threshold: float) -> int:
    """The smallest group of ``n`` samples that :func:`keep` accepts: the least k with k/n reaching the
    threshold, and at least 1 (a kept question needs an answer); n + 1 (never) when n is 0."""
    return next((k for k in range(1, n + 1) if reaches(k / n, threshold)), n + 1)


def early_drop(answers: list, remaining: int, n: int, threshold: float, rule: str = "exact", judged: bool = False) -> bool:
    """Early stop: True when the question can no longer be kept, whatever ``remaining`` more samples say.

    ``answers`` are the samples so far, ``n`` all there will be (the consensus pads to it), ``judged``
    whether a judge will see them. ``rule``: ``off`` never stops; ``exact`` bounds the votes a group
    can reach by the largest normaliser group (no judge) or by every non-empty sample (a judge may merge
    any spellings, but empty samples never join a group); ``normalizer`` uses the normaliser's bound
    even with a judge (an approximation: the judge might have merged distinct spellings).
    """
    if rule == "off":
        return False
    groups = _normalizer_groups(answers)
    if rule == "exact" and judged:
        votes = sum(len(g) for g in groups)
    else:
        votes = max((len(g) for g in groups), default=0)
    return votes + remaining < needed_votes(n, threshold)


# --------------------------------------------------------------------------- holistic judge


def majority_schema(n: int, answers: list, reasoning_chars: int) -> dict:
    """``{"reasoning", "answer", "count"}``: the answer no longer than the longest sample (it must
    equal one), rounded up so that a batch shares few schemas; the count at most ``n``."""
    longest = max((len(a) for a in answers if isinstance(a, str)), default=1)
    answer_chars = 50 * (1 + (longest + 10) // 50)
    return json_object(reasoning=bounded_string(reasoning_chars, 0), answer=bounded_string(answer_chars),
                       count={"type": "integer", "minimum": 0, "maximum": n})


def check_majority(answers: list, majority: str, count: int) -> tuple[list[int] | None, str]:
    """The samples the judge's majority names (its exact-match group) and "" if the reply passes the
    guard; else (None, why not)."""
    groups = _normalizer_groups(answers)
    key = normalize_answer(majority) if isinstance(majority, str) else ""
    group = next((g for g in groups if normalize_answer(answers[g[0]]) == key), None) if key else None
    if group is None:
        return None, f"judge majority {majority!r} matches no sample"
    # a majority holds at least its own exact matches and at least the largest exact-match group
    least, non_empty = max(len(group), max(len(g) for g in groups)), sum(len(g) for g in groups)
    if not least <= count <= non_empty:
        return None, f"judge count {count} for {majority!r} outside [{least}, {non_empty}] (exact-match group, non-empty samples)"
    return group, ""


def holistic_consensus(answers: list, threshold: float, reply: dict | None, why: str = "") -> ConsensusResult:
    """The consensus from the judge's ``reply`` ({"answer", "count"}) when it passes the guard; else
    the normaliser's result marked ``judge_rejected`` (``reply`` None: the reply did not parse, ``why``)."""
    n = len(answers)
    if reply is not None:
        group, why = check_majority(answers, reply["answer"], int(reply["count"]))
        if group is not None:
            sizes = sorted((len(g) for g in _normalizer_groups(answers)), reverse=True)
            return ConsensusResult(answer=" ".join(reply["answer"].split()), fraction=int(reply["count"]) / n,
                                   group_sizes=sizes, n=n, decided_by="judge", groups=_normalizer_groups(answers))
    fallback = consensus(answers, threshold)
    fallback.decided_by, fallback.note = "judge_rejected", why
    return fallback


# --------------------------------------------------------------------------- the stage


class Consensus(Stage):
    """Stage 8: the largest group of equivalent answers must hold ``threshold`` of all samples."""

    name = "consensus"
    reads = ("question", "teacher_answers")
    writes = ("answer_text", "consistency", "consensus_by")
    level_in = level_out = QUESTION

    def __init__(self, consensus: ConsensusConfig, judge: EngineConfig | None = None, *,
                 engine: Engine | None = None, expected_samples: int = 0, served: dict | None = None, **kw):
        super().__init__(**kw)
        self.cfg = consensus
        self.judge_config = judge
        self.expected = expected_samples
        self.judge = engine
        if judge is not None and engine is None and consensus.mode != "normalizer":
            from zwz_ray.engines import connect

            self.judge = connect(judge, served)
        self.mode = consensus.mode if self.judge is not None else "normalizer"

    def engines(self) -> dict[str, Engine]:
        return {self.judge_config.label: self.judge} if self.judge is not None else {}

    def _answers(self, row: dict) -> list:
        answers = list(row["teacher_answers"] or [])
        return answers + [""] * max(0, self.expected - len(answers))  # missing samples count against

    def process(self, rows: list[dict]) -> list[list[dict]]:
        if self.mode == "holistic":
            results = self._holistic(rows)
        elif self.mode == "pairwise":
            verdicts: dict[tuple, bool] = {}
            asked: set[tuple] = set()
            self._pairwise(rows, verdicts, asked)  # a dry run records the pairs the judge must see
            self._ask_pairs(sorted(asked), verdicts)
            results = self._pairwise(rows, verdicts)
        else:
            results = [consensus(self._answers(row), self.cfg.threshold) for row in rows]
        for row, result in zip(rows, results):
            if result is not None:
                self._apply(row, result)
        return [[row] for row in rows]

    # ------------------------------------------------------------------ holistic (the reference)

    def _holistic(self, rows: list[dict]) -> list[ConsensusResult | None]:
        """One judge call per question the normaliser leaves open, all of the batch in ONE engine call."""
        results: list[ConsensusResult | None] = []
        asked, requests = [], []
        for i, row in enumerate(rows):
            answers = self._answers(row)
            results.append(consensus(answers, self.cfg.threshold))
            if _judge_can_matter(_normalizer_groups(answers), len(answers), self.cfg.threshold):
                schema = majority_schema(len(answers), answers, self.cfg.judge_reasoning_chars)
                sampling = SamplingParams(1, self.cfg.judge_temperature, self.cfg.judge_top_p, self.cfg.judge_max_tokens, 0)
                asked.append((i, answers, schema))
                requests.append(ChatRequest([user_message(consensus_prompt(row["question"], answers))], sampling, schema))
        for (i, answers, schema), result in zip(asked, self.judge.chat(requests) if requests else []):
            if result.error:
                self.drop(rows[i], "engine_error", result.error)
                results[i] = None
                continue
            reply, why = parse_reply(result.texts[0] if result.texts else "", schema)
            results[i] = holistic_consensus(answers, self.cfg.threshold, reply, f"judge reply unusable: {why}")
            if results[i].decided_by == "judge_rejected":
                self.flag("judge_rejected")
        return results

    # ------------------------------------------------------------------ pairwise (option)

    def _pairwise(self, rows: list[dict], verdicts: dict, asked: set | None = None) -> list:
        return [consensus(self._answers(row), self.cfg.threshold, same=_lookup(row["question"], verdicts, asked)) for row in rows]

    def _ask_pairs(self, pairs: list[tuple], verdicts: dict) -> None:
        """Every pair of the batch in ONE engine call; a failed verdict counts as "different"."""
        todo = [p for p in pairs if p not in verdicts]
        requests = [
            ChatRequest([user_message(equivalence_prompt(q, a, b))],
                        SamplingParams(1, 0.0, 1.0, self.cfg.pairwise_max_tokens, 0), SYNTH_EQUIVALENCE_SCHEMA)
            for q, a, b in todo
        ]
        for pair, result in zip(todo, self.judge.chat(requests) if requests else []):
            value, _ = parse_reply(result.texts[0] if result.ok and result.texts else "", SYNTH_EQUIVALENCE_SCHEMA)
            verdicts[pair] = bool(value is not None and value["same"] == "Yes")

    def _apply(self, row: dict, result: ConsensusResult) -> None:
        row["consistency"] = result.fraction
        row["consensus_by"] = result.decided_by
        if keep(result, self.cfg.threshold):
            row["answer_text"] = result.answer
            return
        sizes = result.group_sizes or [0]
        detail = f"largest group {sizes[0]} of {result.n} ({result.fraction:.2f} < {self.cfg.threshold})"
        drawn = len(row["teacher_answers"] or [])
        if drawn < result.n:
            detail += f"; {drawn} of {result.n} samples drawn (the rest skipped by early stop, or missing)"
        if result.decided_by == "judge_rejected":
            self.drop(row, "judge_rejected", f"{result.note}; normaliser: {detail}")
        else:
            self.drop(row, "no_consensus", detail)


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
