"""Reading JSON replies and the xgrammar constraint (bounded strings and arrays)."""

from __future__ import annotations

import pytest

from zwz_ray.engines.structured import GrammarCompiler, describe_schema, parse_json, with_schema_instruction

SCHEMA = {
    "type": "object",
    "properties": {"objects": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 2}},
    "required": ["objects"],
}


@pytest.mark.parametrize(
    "text",
    [
        '{"objects": ["cup"]}',
        'Sure! Here it is:\n```json\n{"objects": ["cup", "mug"]}\n```',
        'The list {not json} then {"objects": ["pen"]} done.',
        '{"objects": ["a\tb"]}',  # raw control character, as grammar-built strings may hold
    ],
)
def test_parse_json_finds_valid_values(text):
    value, error = parse_json(text, SCHEMA)
    assert error is None and value["objects"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty"), ("no json here", "no JSON"), ('{"objects": []}', "schema violation"), ('{"objects": ["toolong"]}', "schema violation")],
)
def test_parse_json_reports_why(text, reason):
    value, error = parse_json(text, SCHEMA)
    assert value is None and reason in error


def test_schema_instruction_goes_to_the_last_user_turn():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "list"}]}]
    out = with_schema_instruction(messages, SCHEMA)
    assert out[-1]["content"][-1]["text"] == describe_schema(SCHEMA)
    assert messages[-1]["content"] == [{"type": "text", "text": "list"}]  # input untouched


@pytest.fixture(scope="module")
def compiler():
    from zwz_ray.models import load_text_model

    model, tokenizer = load_text_model("tiny:text")
    return GrammarCompiler(tokenizer, model.get_output_embeddings().weight.shape[0], [tokenizer.eos_token_id])


def _accepts(compiler, text: str) -> bool:
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiler.compile(SCHEMA))
    return matcher.accept_string(text) and matcher.is_completed()


def test_xgrammar_honours_max_length_and_max_items(compiler):
    assert _accepts(compiler, '{"objects": ["abcde", "x"]}')
    assert not _accepts(compiler, '{"objects": ["abcdef"]}')  # maxLength 5
    assert not _accepts(compiler, '{"objects": ["a", "b", "c"]}')  # maxItems 2
    assert not _accepts(compiler, '{"objects": []}')  # minItems 1
    assert not _accepts(compiler, '{"objects":  ["a"]}')  # no free whitespace


def test_importing_engines_loads_no_backend():
    import subprocess
    import sys

    code = "import sys, zwz_ray.engines; print(sorted(m for m in ('vllm', 'httpx', 'xgrammar') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_regex_and_ebnf_compile_and_constrain(compiler):
    import xgrammar as xgr

    from zwz_ray.engines import Grammar

    def accepts(grammar, text):
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
        return matcher.accept_string(text) and matcher.is_completed()

    yes_no = Grammar.regex("(yes|no)")
    assert accepts(yes_no, "yes") and accepts(yes_no, "no") and not accepts(yes_no, "maybe")
    boxed = Grammar.ebnf('root ::= [a-z ]{0,8} "\\\\boxed{" [A-D] "}"')
    assert accepts(boxed, "so \\boxed{B}") and not accepts(boxed, "\\boxed{E}") and not accepts(boxed, "so B")
    assert compiler.compile_grammar(yes_no) is compiler.compile_grammar(Grammar.regex("(yes|no)"))  # cached
    with pytest.raises(ValueError, match="bad regex grammar"):
        compiler.compile_grammar(Grammar.regex("(yes"))
