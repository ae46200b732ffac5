"""Structured output: JSON that validates against a schema, or text that matches a grammar, from any backend.

* ``hf`` constrains decoding with xgrammar: the schema is compiled against the tokenizer's
  vocabulary and every decoding step masks the tokens the grammar forbids
  (:class:`GrammarConstraint`). xgrammar turns ``maxLength`` / ``maxItems`` into bounded
  repetitions, so a schema that bounds every string and array also bounds the output length:
  generation ends within ``max_tokens`` even for a random-weight model.
* ``vllm`` and ``openai`` pass the schema to the server (its own xgrammar / guided decoding).
* A :class:`~zwz_ray.engines.base.Grammar` (EBNF or regex) goes the same ways: xgrammar here,
  vLLM's structured outputs (``grammar`` / ``regex``) on the other backends.
* ``structured_output: off`` describes the schema in words at the end of the prompt
  (:func:`with_schema_instruction`) and relies on :func:`parse_json` to find the JSON.

:func:`parse_json` is what stages use to read a reply either way.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder(strict=False)  # grammar-built strings may hold raw control characters


# --------------------------------------------------------------------------- reading replies


def _candidates(text: str):
    """JSON values found in ``text``: fenced blocks first, then every ``{`` / ``[`` start."""
    for block in _FENCE.findall(text):
        yield from _scan(block)
    yield from _scan(text)


def _scan(text: str):
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                yield _DECODER.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue


def parse_json(text: str, schema: dict | None = None) -> tuple[Any | None, str | None]:
    """The first JSON value in ``text`` that validates against ``schema``.

    Tolerates code fences and text around the JSON (replies written without structured
    decoding). Returns ``(value, None)`` or ``(None, reason)``.
    """
    if not isinstance(text, str) or not text.strip():
        return None, "empty reply"
    first_error = None
    found = False
    try:
        for value in _candidates(text):
            found = True
            if schema is None:
                return value, None
            try:
                jsonschema.validate(value, schema)
                return value, None
            except jsonschema.ValidationError as exc:
                path = "/".join(str(p) for p in exc.absolute_path) or "<root>"
                first_error = first_error or f"schema violation at {path}: {exc.message}"
    except RecursionError:  # a looping model can nest thousands of brackets; that reply has no usable JSON
        return None, first_error or f"JSON nested too deeply in reply: {text[:80]!r}"
    if not found:
        return None, f"no JSON in reply: {text[:80]!r}"
    return None, first_error


# --------------------------------------------------------------------------- schema in words


def describe_schema(schema: dict) -> str:
    """An instruction asking for JSON matching ``schema`` (for models without constrained decoding)."""
    return (
        "Reply with one JSON value and nothing else (no code fences, no comments). "
        "It must validate against this JSON Schema:\n" + json.dumps(schema, separators=(",", ":"))
    )


def with_schema_instruction(messages: list[dict], schema: dict) -> list[dict]:
    """A copy of ``messages`` whose last user turn ends with :func:`describe_schema`."""
    out = [dict(m) for m in messages]
    for msg in reversed(out):
        if msg.get("role") != "user":
            continue
        extra = "\n\n" + describe_schema(schema)
        if isinstance(msg["content"], str):
            msg["content"] = msg["content"] + extra
        else:
            msg["content"] = list(msg["content"]) + [{"type": "text", "text": extra.lstrip()}]
        return out
    return out + [{"role": "user", "content": describe_schema(schema)}]


def schema_key(schema: dict) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- xgrammar (hf backend)


class GrammarCompiler:
    """Compiles JSON schemas, EBNF grammars and regexes against one tokenizer; results are cached."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
        import xgrammar as xgr

        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self._compiler = xgr.GrammarCompiler(self.info, cache_enabled=True)
        self._cache: dict[str, Any] = {}

    def compile(self, schema: dict) -> Any:
        key = schema_key(schema)
        if key not in self._cache:
            # No free whitespace: a random model could otherwise emit blanks forever.
            self._cache[key] = self._compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
        return self._cache[key]

    def compile_grammar(self, grammar: Any) -> Any:
        """A compiled :class:`~zwz_ray.engines.base.Grammar`; ValueError when it does not parse."""
        key = f"{grammar.kind}:{grammar.text}"
        if key not in self._cache:
            try:
                if grammar.kind == "regex":
                    self._cache[key] = self._compiler.compile_regex(grammar.text)
                else:
                    self._cache[key] = self._compiler.compile_grammar(grammar.text)
            except RuntimeError as exc:  # xgrammar's parse errors
                raise ValueError(f"bad {grammar.kind} grammar: {exc}") from None
        return self._cache[key]


class GrammarConstraint:
    """Per-row grammar matchers for one ``generate`` call (rows = requests x samples).

    ``grammars[i]`` is the compiled grammar of row i, or None for a free row. Each step:
    :meth:`advance` feeds the token each row just produced, :meth:`apply` masks the logits.
    A row whose grammar has terminated may only produce ``eos_id``.
    """

    def __init__(self, grammars: list[Any | None], vocab_size: int, eos_id: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.rejected = [False] * len(grammars)

    def advance(self, tokens: list[int]) -> None:
        for i, (m, tok) in enumerate(zip(self.matchers, tokens)):
            if m is None or m.is_terminated() or self.rejected[i]:
                continue
            if not m.accept_token(tok):
                self.rejected[i] = True  # cannot happen when the mask was applied; end the row

    def finished(self, row: int) -> bool:
        m = self.matchers[row]
        return m is not None and (m.is_terminated() or self.rejected[row])

    def apply(self, scores):
        """Mask ``scores`` (rows x vocab) in place; finished rows may only emit EOS."""
        active = []
        for i, m in enumerate(self.matchers):
            if m is None:
                continue
            if self.finished(i):
                scores[i].fill_(float("-inf"))
                scores[i, self.eos_id] = 0.0
                continue
            m.fill_next_token_bitmask(self.bitmask, i)
            active.append(i)
        if active:
            self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), vocab_size=self.vocab_size, indices=active)
        return scores
