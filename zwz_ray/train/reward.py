"""The GRPO reward: accuracy of the answer in ``<answer></answer>``, judged like evaluation judges.

Accuracy calls the shared cascade (:func:`zwz_ray.replies.judge_answer` with the ``grpo``
extraction policy: the first ``<answer>...</answer>``, else the whole response; empty or 300+
characters is no answer), so the reward and the evaluation judge agree on what is correct. Open
answers that the rules leave ``undecided`` go to an LLM judge (:class:`zwz_ray.judge.LLMJudge`)
behind the engine interface when ``grpo.reward.judge`` names one; otherwise they score 0 and are
counted under ``undecided``. With ``grpo.reward.serving.mode: serve`` (hf or vllm judge) the driver
serves the judge once on Ray Serve for the whole run and every worker is its client (``served``);
``actors`` loads a copy in every worker; an ``openai`` judge is an endpoint either way. The paper's reward is accuracy only (``format_weight: 0``).

``grpo.reward.function`` replaces accuracy by a function of your own
(``(response, row) -> float``), as EasyR1's ``reward_function: file.py:name`` does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zwz_ray.logs import get_logger
from zwz_ray.replies import judge_answer
from zwz_ray.train.grpo_config import RewardConfig

log = get_logger(__name__)

# A well-formed reply ends with one non-empty answer block (reasoning before it is free).
_FORMAT = re.compile(r"^(?:(?!<answer>).)*<answer>(?:(?!</?answer>).)+</answer>\s*$", re.S)


@dataclass
class Score:
    reward: float
    correct: bool
    rule: str  # a zwz_ray.replies RULES name, "llm_judge", or "function"
    extracted: str | None = None


def format_score(response: str) -> float:
    return 1.0 if _FORMAT.match(response or "") else 0.0


def load_function(spec: str) -> Callable[[str, dict], float]:
    """``package.module:name`` or ``path/to/file.py:name`` -> the function."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"grpo.reward.function {spec!r}: expected 'package.module:name' or 'file.py:name'")
    if target.endswith(".py"):
        path = os.path.abspath(os.path.expanduser(target))
        if not os.path.isfile(path):
            raise ValueError(f"grpo.reward.function {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(f"zwz_reward_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"grpo.reward.function {spec!r}: {target} has no function {name!r}")
    return fn


class Reward:
    """Scores the responses of prompt rows (dicts with id, problem, answer, is_mcq, options, question_type)."""

    def __init__(self, cfg: RewardConfig, served: dict | None = None):
        self.cfg = cfg
        self.served = served or {}  # model key -> DeploymentRef: the judge's Serve deployment, when served
        self.function = load_function(cfg.function) if cfg.function else None
        self._judge: Any = None

    def judge(self) -> Any:
        """The LLM judge, connected on first use: a client of its deployment, an endpoint, or loaded here."""
        if self._judge is None and self.cfg.judge is not None:
            from zwz_ray.engines import connect
            from zwz_ray.judge import LLMJudge

            self._judge = LLMJudge(connect(self.cfg.judge, self.served), max_tokens=self.cfg.judge_max_tokens)
        return self._judge

    def score(self, rows: list[dict], responses: list[list[str]]) -> list[list[Score]]:
        """One list of scores per row, in the order of its responses."""
        if self.function is not None:
            return [[Score(float(self.function(text, row)), False, "function") for text in texts]
                    for row, texts in zip(rows, responses)]
        verdicts = [[judge_answer(text, row["answer"], is_mcq=row["is_mcq"], options=row.get("options") or {}, policy="grpo")
                     for text in texts] for row, texts in zip(rows, responses)]
        correct = [[(v.correct, v.rule) for v in vs] for vs in verdicts]
        self._ask_judge(rows, verdicts, correct)
        w = self.cfg.format_weight
        return [[Score((1.0 - w) * float(ok) + w * format_score(text), ok, rule, v.extracted)
                 for (ok, rule), v, text in zip(decided, vs, texts)]
                for decided, vs, texts in zip(correct, verdicts, responses)]

    def _ask_judge(self, rows: list[dict], verdicts: list[list[Any]], correct: list[list[tuple[bool, str]]]) -> None:
        """Open answers the rules left undecided: the LLM judge decides (in place)."""
        todo = [(i, j) for i, vs in enumerate(verdicts) for j, v in enumerate(vs)
                if v.rule == "undecided" and not rows[i]["is_mcq"]]
        judge = self.judge() if todo else None
        if judge is None:
            return
        asks = [{"id": rows[i]["id"], "question": rows[i]["problem"], "answer": rows[i]["answer"],
                 "extracted": verdicts[i][j].extracted} for i, j in todo]
        for (i, j), (decision, _text) in zip(todo, judge.decide(asks)):
            correct[i][j] = (bool(decision), "llm_judge" if decision is not None else "error")

    def close(self) -> None:
        if self._judge is not None:
            self._judge.engine.close()


def reward_plot(history: list[dict]) -> bytes | None:
    """PNG of a GRPO run: reward and accuracy, policy loss, response length per RL step (None without history)."""
    if not history:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(steps, [r["reward_mean"] for r in history], label="reward (mean)")
    axes[0].plot(steps, [r["accuracy"] for r in history], label="accuracy", linestyle="--")
    axes[0].set(xlabel="RL step", ylabel="per response", title="reward")
    axes[0].legend()
    axes[1].plot(steps, [r["loss"] for r in history])
    axes[1].set(xlabel="RL step", ylabel="clipped surrogate", title="policy loss")
    axes[2].plot(steps, [r["response_len_mean"] for r in history], label="mean")
    axes[2].plot(steps, [r["response_len_max"] for r in history], label="max", linestyle="--")
    axes[2].set(xlabel="RL step", ylabel="tokens", title="response length")
    axes[2].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
