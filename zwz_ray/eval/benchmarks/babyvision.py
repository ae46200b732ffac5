"""BabyVision (UnipatAI/BabyVision): 388 visual-reasoning questions, 4 types, 22 subtypes.

Layout (the dataset card; lmms-eval's babyvision task): ``taskId, question, image, ansType
("choice" / "blank"), options, choiceAns (index of the right option), blankAns, type, subtype``.
Choice questions are scored by letter, blank ones by the judging cascade (an LLM judge, as the
authors use, decides what the rules cannot). Scores: overall accuracy (headline), per type and
per type/subtype.
"""

from __future__ import annotations

from zwz_ray.eval.benchmarks.base import LayoutError, Preset, as_list, need, plain_score, with_options


def _convert(row: dict) -> list[dict]:
    rid = next((row[k] for k in ("taskId", "id", "index") if row.get(k) is not None), None)
    if rid is None:
        raise LayoutError("taskId", "is missing (nor id, index)")
    kind = str(need(row, "ansType")).strip().lower()
    question = need(row, "question")
    options = None
    if kind == "choice":
        try:
            options = [str(o) for o in as_list(row.get("options"))]
            answer = chr(65 + int(need(row, "choiceAns", (int, float, str))))
        except ValueError as exc:
            raise LayoutError("choiceAns", str(exc)) from None
        if not options or not 0 <= ord(answer) - 65 < len(options):
            raise LayoutError("choiceAns", f"is {row.get('choiceAns')!r} for {len(options or [])} options")
        question = with_options(question, options)
    elif kind == "blank":
        answer = str(need(row, "blankAns", (str, int, float)))
    else:
        raise LayoutError("ansType", f"is {kind!r}, not 'choice' or 'blank'")
    kind_of = str(need(row, "type"))
    return [{"id": str(rid), "question": question, "answer": answer, "image": row.get("image"), "options": options,
             "category": kind_of, "subtype": f"{kind_of}/{row.get('subtype') or ''}", "ans_type": kind}]


PRESETS = [
    Preset("babyvision", "BabyVision", "hf://datasets/UnipatAI/BabyVision", ("question", "image", "ansType", "type", "subtype"),
           _convert, lambda df: plain_score(df, "category", "subtype", "ans_type"), "UnipatAI/BabyVision; lmms-eval babyvision task",
           meta=("subtype", "ans_type")),
]
