"""The LLM judge: a text model decides whether an answer means the same as the reference.

The rule cascade (:func:`zwz_ray.replies.judge_answer`) decides what rules can; this judge sees
only what they leave ``undecided``, with structured output ``{"equivalent": bool}``
(``EVAL_EQUIVALENCE_SCHEMA``). Evaluation uses it today; the synthesis difficulty filter and the
GRPO reward are its other consumers. (Stage 8's answer consensus asks its own judge with
``SYNTH_EQUIVALENCE_SCHEMA``, in :mod:`zwz_ray.synth.stages.s08_consensus`.)
"""

from __future__ import annotations

import re

from zwz_ray.engines import ChatRequest, SamplingParams, parse_json, user_message
from zwz_ray.prompts import judge_equivalence_prompt

EVAL_EQUIVALENCE_SCHEMA = {
    "type": "object",
    "properties": {"equivalent": {"type": "boolean"}},
    "required": ["equivalent"],
    "additionalProperties": False,
}


def parse_equivalence(text: str) -> bool | None:
    """The judge's decision from its output: JSON ``{"equivalent": ...}``, else a yes/no word."""
    data, _ = parse_json(text, EVAL_EQUIVALENCE_SCHEMA)
    if isinstance(data, dict) and isinstance(data.get("equivalent"), bool):
        return data["equivalent"]
    words = re.findall(r"[a-z]+", (text or "").lower())
    yes, no = {"yes", "true"} & set(words), {"no", "false", "not"} & set(words)
    if yes and not no:
        return True
    if no and not yes:
        return False
    return None


class LLMJudge:
    """Asks a text model whether an undecided answer means the same as the reference."""

    def __init__(self, engine, max_tokens: int = 64):
        self.engine = engine
        self.max_tokens = max_tokens

    def requests(self, rows: list[dict]) -> list:
        sampling = SamplingParams(n=1, temperature=0.0, max_tokens=self.max_tokens, seed=0)
        return [
            ChatRequest(
                messages=[user_message(judge_equivalence_prompt(r["question"], r["answer"], r["extracted"] or ""))],
                sampling=sampling,
                json_schema=EVAL_EQUIVALENCE_SCHEMA,
                request_id=f"judge:{r.get('id', i)}:{r.get('view', '')}",
            )
            for i, r in enumerate(rows)
        ]

    def decide(self, rows: list[dict]) -> list[tuple[bool | None, str]]:
        """(equivalent or None when the judge gave no usable decision, the judge's raw text) per row."""
        results = self.engine.chat(self.requests(rows))
        out = []
        for res in results:
            text = res.texts[0] if res.ok and res.texts else ""
            out.append((parse_equivalence(text) if res.ok else None, text if res.ok else f"error: {res.error}"))
        return out
