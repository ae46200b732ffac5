"""Shared prefill for the n samples of a request in the transformers engine (see ``engines/hf.py``).

``generate(num_return_sequences=n)`` repeats every prompt n times before its first forward pass, so
the language model prefills each prompt n times. Here the prompts of a chunk of B requests go through
ONE forward pass (all tokens but the last, images included, ``use_cache=True``); the KV cache and the
model's per-row position state (Qwen-VL's ``rope_deltas``) are then repeated n times per row
(request-major, samples consecutive: the rows ``generate`` would have made), and ``generate``
continues from that cache: its first step runs only the last prompt token of each of the B x n rows,
and pixel values are not passed again.

Positions: the prefill forward gets the position ids ``generate`` itself would build for the
prompt (``_prepare_position_ids_for_generation``: from the attention mask, so left padding is
skipped; for Qwen-VL also the 3-D vision positions, which sets ``rope_deltas``). When ``generate``
continues from a cache, it derives the positions of the new tokens from the attention mask (plus the
repeated ``rope_deltas`` for Qwen-VL), exactly as it does after its own prefill.

Only the model types in :data:`SHARED_PREFILL_MODEL_TYPES` take this path; their first-step logits
match the expanded path to float rounding (tests/test_engines_hf_prefill.py). Any other model type
keeps the expanded path: its cache layout or per-row state (sliding-window or recurrent layers,
position state other than ``rope_deltas``) has not been checked.
"""

from __future__ import annotations

from typing import Any

# model_type -> why the shared path is exact for it
SHARED_PREFILL_MODEL_TYPES: dict[str, str] = {
    "qwen3": "DynamicCache of full-attention layers, 1-D positions from the attention mask",
    "qwen2_5_vl": "DynamicCache; 3-D rope positions continue from base_model.rope_deltas, repeated per sample",
    "qwen3_vl": "DynamicCache; 3-D rope positions continue from base_model.rope_deltas, repeated per sample",
    "idefics3": "DynamicCache of its Llama text model, 1-D positions; image features only enter the prefill",
}
# keys of the encoded inputs that have one row per prompt token column (cut with the last token)
_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def can_share(model: Any, inputs: Any, n: int) -> bool:
    """Whether the chunk can take the shared path: several samples, an allowed model type, every
    prompt at least two tokens long, and a last prompt token that is text (not an image token)."""
    if n < 2 or model.config.model_type not in SHARED_PREFILL_MODEL_TYPES:
        return False
    mask = inputs["attention_mask"]
    if mask.shape[1] < 2 or int(mask.sum(dim=1).min()) < 2:
        return False
    last = inputs["input_ids"][:, -1]
    return not any(bool((last == tok).any()) for tok in _media_token_ids(model.config))


def shared_prefill(model: Any, inputs: Any, n: int) -> tuple[dict[str, Any], int]:
    """Run the one prefill forward; return the ``generate`` kwargs of the n-times repeated rows (the
    full prompts, their attention mask and the filled cache) and the token positions prefilled."""
    rows, width = inputs["input_ids"].shape
    head = {k: (v[:, :-1] if k in _PER_TOKEN else v) for k, v in inputs.items()}
    head["position_ids"] = model._prepare_position_ids_for_generation(head["input_ids"], dict(head))
    out = model(**head, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    base = model.base_model
    if getattr(base, "rope_deltas", None) is not None:
        base.rope_deltas = base.rope_deltas.repeat_interleave(n, dim=0)
    kwargs = {
        "input_ids": inputs["input_ids"].repeat_interleave(n, dim=0),
        "attention_mask": inputs["attention_mask"].repeat_interleave(n, dim=0),
        "past_key_values": cache,
    }
    return kwargs, rows * (width - 1) + rows * n


def expanded_prefill_tokens(inputs: Any, n: int) -> int:
    """Token positions ``generate(num_return_sequences=n)`` prefills: every padded prompt, n times."""
    rows, width = inputs["input_ids"].shape
    return rows * n * width


def _media_token_ids(config: Any) -> list[int]:
    names = ("image_token_id", "video_token_id", "image_token_index", "video_token_index")
    return [int(v) for v in (getattr(config, name, None) for name in names) if isinstance(v, int)]
