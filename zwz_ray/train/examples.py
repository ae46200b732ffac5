"""From a synthesis row to training tensors: the SFT chat, answer-only labels, padding.

The student sees exactly what it sees at evaluation: the user turn holds the image and
``student_prompt(problem)``; the assistant turn is ``student_target(answer)``. Only the
assistant tokens (through the end-of-turn token) carry labels; prompt and image tokens are -100.
A row is never truncated: one longer than ``max_seq_len`` is dropped as ``too_long``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zwz_ray.images import ImageDecodeError, decode_image
from zwz_ray.prompts import student_prompt, student_target

IGNORE_INDEX = -100
REQUIRED_COLUMNS = ("id", "image", "problem", "answer")
# Every reason a row can be skipped; counted per run and reported in metrics and the summary.
DROP_REASONS = ("missing_image", "bad_image", "empty_problem", "empty_answer", "too_long", "encode_error")
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<end_of_utterance>")


@dataclass
class Example:
    """One encoded row: a token sequence with labels on the answer and the image's pixels."""

    id: str
    input_ids: torch.Tensor  # (T,) long
    labels: torch.Tensor  # (T,) long, IGNORE_INDEX outside the answer
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor | None
    mm_token_type_ids: torch.Tensor | None = None

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


class Dropped(Exception):
    """A row that cannot become an example; ``reason`` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_columns(row: dict) -> None:
    """Fail (not drop) when the rows lack a required column altogether: the input is the wrong table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"training rows lack the column(s) {missing}; got {sorted(row)} (synthesis writes {list(REQUIRED_COLUMNS)})")


def chat_messages(problem: str, answer: str | None = None) -> list[dict]:
    """The student's conversation: image + prompt, and the target answer when training."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": student_prompt(problem)}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": student_target(answer)}]})
    return messages


def row_image(data: Any, max_image_bytes: int):
    """A row's encoded image, decoded; ``Dropped`` (missing_image / bad_image) when it cannot be used."""
    if data is None or (isinstance(data, (bytes, bytearray)) and len(data) == 0):
        raise Dropped("missing_image")
    if not isinstance(data, (bytes, bytearray)):
        raise Dropped("bad_image", f"expected encoded image bytes, got {type(data).__name__}")
    if len(data) > max_image_bytes:
        raise Dropped("bad_image", f"{len(data)} bytes > max_image_bytes {max_image_bytes}")
    try:
        return decode_image(bytes(data))
    except ImageDecodeError as exc:
        raise Dropped("bad_image", exc.reason) from exc


def read_row(row: dict, max_image_bytes: int) -> tuple[str, str, Any]:
    """A training row's problem, answer and decoded image; ``Dropped`` with the reason when one is unusable."""
    check_columns(row)
    problem, answer = (row.get("problem") or "").strip(), (row.get("answer") or "").strip()
    if not problem:
        raise Dropped("empty_problem")
    if not answer:
        raise Dropped("empty_answer")
    return problem, answer, row_image(row.get("image"), max_image_bytes)


class SFTEncoder:
    """Turns rows into :class:`Example` with a VLM processor (whose pixel limits are already set)."""

    def __init__(self, processor: Any, max_seq_len: int, max_image_bytes: int):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_seq_len = max_seq_len
        self.max_image_bytes = max_image_bytes
        vocab = self.tokenizer.get_vocab()
        ends = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
        if self.tokenizer.eos_token_id is not None:
            ends.add(self.tokenizer.eos_token_id)
        self.end_ids = ends

    def __call__(self, row: dict) -> Example:
        problem, answer, image = read_row(row, self.max_image_bytes)
        try:
            prompt, suffix = self._texts(problem, answer)
            enc = self.processor(text=[prompt], images=[image], return_tensors="pt")
            answer_ids = self._answer_ids(suffix)
        except Dropped:
            raise
        except Exception as exc:  # noqa: BLE001 - a processor failure on one row must not stop training
            raise Dropped("encode_error", f"{type(exc).__name__}: {exc}") from exc
        prompt_ids = enc["input_ids"][0]
        length = len(prompt_ids) + len(answer_ids)
        if length > self.max_seq_len:
            raise Dropped("too_long", f"{length} tokens > max_seq_len {self.max_seq_len}")
        input_ids = torch.cat([prompt_ids, answer_ids])
        labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids])
        mm = enc.get("mm_token_type_ids")
        if mm is not None:
            mm = torch.cat([mm[0], torch.zeros_like(answer_ids)])
        return Example(str(row.get("id")), input_ids, labels, enc["pixel_values"], enc.get("image_grid_thw"), mm)

    def _texts(self, problem: str, answer: str) -> tuple[str, str]:
        render = self.processor.apply_chat_template
        prompt = render(chat_messages(problem), tokenize=False, add_generation_prompt=True)
        full = render(chat_messages(problem, answer), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the full chat; cannot mask the prompt")
        return prompt, full[len(prompt):]

    def _answer_ids(self, suffix: str) -> torch.Tensor:
        ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        ends = [i for i, t in enumerate(ids) if t in self.end_ids]
        if ends:  # keep through the end-of-turn token; the template's trailing newline teaches nothing
            ids = ids[: ends[-1] + 1]
        if not ids:
            raise Dropped("empty_answer", "the answer renders to no tokens")
        return torch.tensor(ids, dtype=torch.long)


def collate(examples: list[Example], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a micro batch; images are concatenated along the patch axis (Qwen-VL layout)."""
    longest = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    mm = torch.zeros((n, longest), dtype=torch.long) if examples[0].mm_token_type_ids is not None else None
    for i, e in enumerate(examples):
        t = len(e.input_ids)
        input_ids[i, :t], labels[i, :t], attention_mask[i, :t] = e.input_ids, e.labels, 1
        if mm is not None:
            mm[i, :t] = e.mm_token_type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "pixel_values": torch.cat([e.pixel_values for e in examples])}
    if examples[0].image_grid_thw is not None:
        batch["image_grid_thw"] = torch.cat([e.image_grid_thw for e in examples])
    if mm is not None:
        batch["mm_token_type_ids"] = mm
    batch["num_samples"] = n
    batch["num_tokens"] = int(attention_mask.sum())
    batch["num_targets"] = int((labels != IGNORE_INDEX).sum())
    batch["ids"] = [e.id for e in examples]
    return batch
