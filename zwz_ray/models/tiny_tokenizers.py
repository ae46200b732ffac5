"""Tokenizers of the tiny offline models: byte-level BPE trained on a small English corpus.

Special tokens and chat templates follow each real family (Qwen ChatML, Idefics3, CLIP), so that
prompts, chat templating and token ids behave as with the real checkpoints.
"""

from __future__ import annotations

from typing import Any

# A small English corpus for the tiny tokenizers: objects, colours, numbers, letters, JSON, digits.
CORPUS = """
The red cup is on the wooden table next to a blue bottle. A small green plant sits by the window.
There are three yellow books, two black pens and one white phone on the desk. The sign reads OPEN.
What colour is the car? The car is red. How many people are in the picture? There are five people.
What is written on the board? The board says EXIT 24. Which object is inside the red box? A clock.
Answer with the option's letter. A. red B. blue C. green D. yellow. The answer is A. The answer is B.
The answer is C. The answer is D. Options: (A) two (B) three (C) four (D) five. Answer: C
Colours: red, orange, yellow, green, blue, purple, pink, brown, black, white, grey, gray, silver, gold.
Materials: wood, metal, glass, plastic, paper, stone, fabric, leather, rubber, ceramic, concrete.
Shapes: round, square, circle, triangle, rectangle, oval, star, heart, arrow, cross, line, dot.
Objects: cup, mug, bottle, chair, table, lamp, clock, sign, car, bus, bike, tree, dog, cat, bird, boat,
book, phone, laptop, screen, window, door, flag, ball, hat, shoe, bag, box, plate, bowl, fork, knife,
spoon, person, man, woman, child, building, street, road, house, roof, wall, light, logo, label, letter.
Numbers: zero one two three four five six seven eight nine ten eleven twelve twenty hundred thousand.
Digits: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 42 50 64 99 100 128 256 512 1000 2026.
Letters: A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z.
Spatial words: left, right, top, bottom, above, below, behind, in front of, next to, near, far, between.
Scene words: kitchen, office, street, park, beach, shop, room, garden, station, market, indoors, outdoors.
JSON: {"objects": ["red cup", "blue bottle"], "count": 3, "valid": true, "answer": "B", "score": 0.75}
[{"question": "What colour is the cup?", "answer": "red"}, {"question": "How many?", "answer": "2"}]
{"box": [12, 34, 56, 78], "label": "clock", "bbox_2d": [100, 200, 300, 400]} null false true
VALID: Yes. Reason: the object is unique. VALID: No. Reason: the answer is ambiguous.
Let me think step by step. The final answer is \\boxed{4}. <answer>A</answer> <answer>red</answer>
1. red cup 2. blue bottle 3. green plant 4. white sign 5. black cat - * : ; , . ! ? ' " ( ) [ ] { } < > / \\ | _ = + # @ % & $ ~
"""

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_ADDED = ["<tool_call>", "</tool_call>", "<think>", "</think>"]
_IDEFICS3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<|pad|>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
_CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]

# ChatML for Qwen: content is a string or a list of text / image / video parts.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Idefics3 style: "User:<image>text<end_of_utterance>\nAssistant:".
IDEFICS3_CHAT_TEMPLATE = (
    "{{- '<|im_start|>' -}}"
    "{%- for message in messages -%}"
    "{{- message['role'] | capitalize -}}"
    "{%- if message['content'] is string -%}{{- ': ' + message['content'] -}}"
    "{%- else -%}"
    "{%- if message['content'] and message['content'][0]['type'] in ('image', 'image_url') -%}{{- ':' -}}"
    "{%- else -%}{{- ': ' -}}{%- endif -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_utterance>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


def train_tokenizer(
    special_tokens: list[str],
    *,
    vocab_size: int = 1024,
    chat_template: str | None = None,
    wrap: tuple[str, str] | None = None,
    **roles: str,
) -> Any:
    """A byte-level BPE fast tokenizer trained on ``CORPUS``; special tokens take the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([line for line in CORPUS.splitlines() if line.strip()], trainer)
    if wrap:
        bos, eos = wrap
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            pair=f"{bos} $A {eos} $B {eos}",
            special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=chat_template, **roles)


def qwen_tokenizer() -> Any:
    tokenizer = train_tokenizer(
        _QWEN_SPECIALS,
        chat_template=QWEN_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_tokens(_QWEN_ADDED)
    return tokenizer


def idefics3_tokenizer() -> Any:
    return train_tokenizer(
        _IDEFICS3_SPECIALS,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|pad|>",
        extra_special_tokens={"image_token": "<image>"},
    )


def clip_tokenizer() -> Any:
    """The SAM3 text encoder's tokenizer: CLIP's start/end tokens wrap every text."""
    return train_tokenizer(
        _CLIP_SPECIALS,
        wrap=("<|startoftext|>", "<|endoftext|>"),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def token_ids(tokenizer: Any, **names: str) -> dict[str, int]:
    return {field: tokenizer.convert_tokens_to_ids(token) for field, token in names.items()}


def qwen_vl_ids(tokenizer: Any) -> dict[str, int]:
    return token_ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
