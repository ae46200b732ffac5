"""Stage 8: answer consensus across teacher samples.

Answers are grouped in two passes: exact equality after :func:`normalize_answer` (cheap,
deterministic), then, optionally, a judge callback compares one representative per group
pairwise, in a single batched call, and groups it calls the same are merged transitively.
The largest group wins; the question is kept when it holds at least ``threshold`` of all
samples (paper: 0.75, i.e. 6 of 8). Empty answers never join a group but count in ``n``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

from zwz_ray.parsing import normalize_answer

DEFAULT_THRESHOLD = 0.75

# Judge callback: pairs of answers -> one "same?" flag per pair, in order.
SameFn = Callable[[list[tuple[str, str]]], list[bool]]


@dataclass
class ConsensusResult:
    answer: str | None
    fraction: float
    group_sizes: list[int] = field(default_factory=list)
    n: int = 0
    decided_by: str = "normalizer"  # "normalizer" | "judge"
    groups: list[list[int]] = field(default_factory=list)


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


def keep(result: ConsensusResult, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether the question survives stage 8 (small tolerance for float round-off)."""
    return result.answer is not None and result.fraction >= threshold - 1e-9
