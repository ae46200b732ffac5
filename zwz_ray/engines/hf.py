"""The transformers backend: batched ``generate`` on any device, text models and VLMs.

Requests are grouped by (n, max_tokens) and run ``max_batch_requests`` at a time through one
``generate`` call with left padding; the n samples of a request are n consecutive rows of that
batch (request-major), decoded together.

Shared prefill (``engines/hf_prefill.py``): for n > 1 on an allowed model type (the tiny text,
Qwen2.5-VL, Qwen3-VL and Idefics3 families) the chunk's prompts run ONE forward pass over all
tokens but the last, images included; the KV cache and Qwen-VL's ``rope_deltas`` are repeated n
times per row and ``generate`` continues from that cache with the repeated prompts, so its first
step runs only the last prompt token of each row and pixel values are not passed again. The
tokens are those of the expanded path (``num_return_sequences=n``, which prefills every prompt n
times and is kept for n == 1 and any other model type); the images are encoded once per chunk on
both paths (transformers encodes them before it repeats the rows). ``prefilled_tokens`` counts
the token positions, padding included, that the prompt prefills ran over; ``share_prefill =
False`` switches to the expanded path (tests, ``benchmarks/bench_hf_prefill.py``).

Token choice is done by :class:`RowSampler`, a logits processor that, for every row, applies
the row's presence / repetition penalties (:class:`Penalties`), its grammar mask (a JSON
schema, EBNF grammar or regex compiled by xgrammar), then its own temperature / top-k / top-p,
draws with its own seeded generator, and hands ``generate`` a one-hot distribution. So every
request keeps its own sampling parameters and its samples depend only on its seed, not on
which other requests share the batch; temperature 0 is greedy (on the penalised logits, as
vLLM does). ``generate``'s own samplers stay off for the same reason: they take one value per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zwz_ray.engines.base import ChatRequest, ChatResult, Engine, message_images, template_messages
from zwz_ray.engines.hf_prefill import can_share, expanded_prefill_tokens, shared_prefill
from zwz_ray.engines.structured import GrammarCompiler, GrammarConstraint, with_schema_instruction
from zwz_ray.logs import get_logger

log = get_logger(__name__)
_SEED_STRIDE = 1_000_003


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class _Prepared:
    index: int  # position in the caller's request list
    request: ChatRequest
    prompt: str
    images: list
    grammar: Any = None  # the compiled output constraint, if any


class Penalties:
    """Per-row presence and repetition penalties, as a logits processor over (rows x vocab) scores.

    Row i's prompt is ``input_ids[i, pads[i]:prompt_width]`` (its left padding is skipped, so a pad
    token that doubles as EOS is not penalised) and its generated part ``input_ids[i, prompt_width:]``.
    Presence (OpenAI): ``presence[i]`` is subtracted once from every token present in the generated
    part. Repetition (CTRL, as in transformers and vLLM): every token of the prompt or the generated
    part has a positive logit divided by ``repetition[i]``, a negative one multiplied by it.
    """

    def __init__(self, presence: list[float], repetition: list[float], prompt_width: int, pads: list[int]):
        self.presence = torch.tensor(presence, dtype=torch.float32)
        self.repetition = torch.tensor(repetition, dtype=torch.float32)
        self.pads = torch.tensor(pads, dtype=torch.long)
        self.prompt_width = prompt_width
        self.active = bool((self.presence != 0).any() or (self.repetition != 1).any())

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return scores
        device, (rows, width) = scores.device, input_ids.shape
        pos = torch.arange(width, device=device)[None, :].expand(rows, -1)
        ids = input_ids.to(device)
        # scatter_add (not scatter): a token repeated in a row must count, whatever the duplicates hold
        generated = torch.zeros_like(scores).scatter_add_(1, ids, (pos >= self.prompt_width).to(scores.dtype)) > 0
        seen = torch.zeros_like(scores).scatter_add_(1, ids, (pos >= self.pads.to(device)[:, None]).to(scores.dtype)) > 0
        rep = self.repetition.to(device)[:, None].to(scores.dtype)
        scores = torch.where(seen, torch.where(scores > 0, scores / rep, scores * rep), scores)
        return scores - generated.to(scores.dtype) * self.presence.to(device)[:, None].to(scores.dtype)


class RowSampler:
    """Logits processor that picks every row's next token itself (see the module docstring).

    ``top_ks[i]`` <= 0 means no top-k limit for row i.
    """

    def __init__(
        self,
        temps: list[float],
        top_ps: list[float],
        seeds: list[int],
        eos_id: int,
        constraint: GrammarConstraint | None,
        top_ks: list[int] | None = None,
        penalties: Penalties | None = None,
    ):
        self.temps = torch.tensor(temps, dtype=torch.float32)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32)
        self.top_ks = torch.tensor(top_ks if top_ks is not None else [0] * len(temps), dtype=torch.long)
        self.generators = [torch.Generator().manual_seed(s % (2**63)) for s in seeds]
        self.eos_id = eos_id
        self.constraint = constraint
        self.penalties = penalties
        self._started = False

    def __call__(self, input_ids: torch.Tensor, model_scores: torch.Tensor) -> torch.Tensor:
        scores = model_scores.float()
        if self.penalties is not None:
            scores = self.penalties(input_ids, scores)
        if self.constraint is not None:
            if self._started:
                self.constraint.advance(input_ids[:, -1].tolist())
            scores = self.constraint.apply(scores)
        self._started = True
        tokens = self._sample(scores)
        out = torch.full_like(model_scores, float("-inf"))
        out.scatter_(1, tokens[:, None], 0.0)
        return out

    def _sample(self, scores: torch.Tensor) -> torch.Tensor:
        device = scores.device
        temps, top_ps, top_ks = self.temps.to(device), self.top_ps.to(device), self.top_ks.to(device)
        uniforms = torch.tensor([torch.rand(1, generator=g).item() for g in self.generators], device=device)
        greedy = temps <= 0
        logits = scores / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        # stable: among equal logits the lowest id comes first, as with argmax, so top_k=1 is greedy
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(dim=-1).nan_to_num(0.0)
        limit = torch.where(top_ks > 0, top_ks, torch.full_like(top_ks, probs.shape[-1]))
        probs = probs.masked_fill(torch.arange(probs.shape[-1], device=device)[None, :] >= limit[:, None], 0.0)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_ps[:, None], 0.0)
        cum = probs.cumsum(-1)
        pick = torch.searchsorted(cum, (uniforms * cum[:, -1])[:, None]).clamp(max=cum.shape[-1] - 1)
        tokens = order.gather(1, pick).squeeze(1)
        tokens = torch.where(greedy, scores.argmax(-1), tokens)
        dead = torch.isinf(scores).all(-1)  # nothing allowed: end the row
        return torch.where(dead, torch.full_like(tokens, self.eos_id), tokens)


class HFEngine(Engine):
    """transformers ``generate`` for causal LMs and VLMs (Qwen2.5-VL, Qwen3-VL, Idefics3)."""

    def __init__(self, config):
        super().__init__(config)
        from zwz_ray.models import VLM_FAMILIES, load_text_model, load_vlm, model_family

        self.device = pick_device(config.device)
        self.is_vlm = model_family(config.model) in VLM_FAMILIES
        if self.is_vlm:
            self.model, self.processor = load_vlm(
                config.model, device=self.device, dtype=config.dtype, min_pixels=config.min_pixels, max_pixels=config.max_pixels
            )
            self.tokenizer = self.processor.tokenizer
        else:
            self.model, self.tokenizer = load_text_model(config.model, device=self.device, dtype=config.dtype)
            self.processor = None
        self.tokenizer.padding_side = "left"
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        text_config = self.model.config.get_text_config()
        self.context_len = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 30)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._grammar_compiler: GrammarCompiler | None = None
        self.share_prefill = True  # one prefill for the n samples of a request where exact (hf_prefill.py)
        self.prefilled_tokens = 0  # token positions (padding included) the prompt prefills ran over

    def __repr__(self) -> str:
        return f"HFEngine(model={self.config.model!r}, device={self.device!r})"

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids] if ids is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError(f"model {self.config.model!r} has no EOS token")
        return ids

    @property
    def grammars(self) -> GrammarCompiler:
        if self._grammar_compiler is None:
            self._grammar_compiler = GrammarCompiler(self.tokenizer, self.vocab_size, self.eos_ids)
        return self._grammar_compiler

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ batching

    def _chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[_Prepared]] = {}
        for i, req in enumerate(requests):
            try:
                item = self._prepare(i, req)
            except Exception as exc:  # bad image, template error: this request only
                results[i] = ChatResult(error=f"bad_request: {type(exc).__name__}: {exc}")
                continue
            groups.setdefault((req.sampling.n, req.sampling.max_tokens), []).append(item)
        size = self.config.max_batch_requests
        for items in groups.values():
            for start in range(0, len(items), size):
                for item, res in zip(items[start : start + size], self._run_safely(items[start : start + size])):
                    results[item.index] = res
        return results  # type: ignore[return-value]

    def _prepare(self, index: int, req: ChatRequest) -> _Prepared:
        messages = req.messages
        if req.json_schema is not None and self.config.structured_output == "off":
            messages = with_schema_instruction(messages, req.json_schema)
        images = message_images(messages)
        if images and not self.is_vlm:
            raise ValueError(f"{self.config.model} is a text model and cannot take images")
        if self.is_vlm:
            prompt = self.processor.apply_chat_template(template_messages(messages), tokenize=False, add_generation_prompt=True)
        else:
            prompt = self.tokenizer.apply_chat_template(_text_only(messages), tokenize=False, add_generation_prompt=True)
        return _Prepared(index, req, prompt, images, self._constraint(req))

    def _constraint(self, req: ChatRequest) -> Any:
        """The request's compiled schema or grammar (a bad grammar fails this request only)."""
        if self.config.structured_output == "off":
            return None
        if req.json_schema is not None:
            return self.grammars.compile(req.json_schema)
        if req.grammar is not None:
            return self.grammars.compile_grammar(req.grammar)
        return None

    def _run_safely(self, items: list[_Prepared]) -> list[ChatResult]:
        """Run a chunk; if the whole call fails, run its requests one by one to isolate the culprit."""
        try:
            return self._run(items)
        except Exception as exc:
            if len(items) == 1:
                log.warning("generate failed for request %r: %s", items[0].request.request_id, exc)
                return [ChatResult(error=f"generate_failed: {type(exc).__name__}: {exc}")]
            mid = len(items) // 2  # bisect to isolate the failing request(s)
            return self._run_safely(items[:mid]) + self._run_safely(items[mid:])

    def _encode(self, items: list[_Prepared]) -> Any:
        prompts = [item.prompt for item in items]
        if not self.is_vlm:
            return self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        images = [item.images for item in items]
        if not any(images):
            return self.processor(text=prompts, padding=True, return_tensors="pt")
        return self.processor(text=prompts, images=images, padding=True, return_tensors="pt")

    def _run(self, items: list[_Prepared]) -> list[ChatResult]:
        inputs = self._encode(items)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        too_long = {k for k, n in enumerate(lengths) if n >= self.context_len}
        if too_long:
            return self._without(items, too_long, lengths)
        return self._generate(items, inputs.to(self.device), lengths)

    def _without(self, items: list[_Prepared], too_long: set[int], lengths: list[int]) -> list[ChatResult]:
        """Error results for over-long prompts; the others run on their own."""
        rest = [item for k, item in enumerate(items) if k not in too_long]
        done = iter(self._run(rest) if rest else [])
        return [
            ChatResult(prompt_tokens=lengths[k], error=f"prompt_too_long: {lengths[k]} tokens, context is {self.context_len}")
            if k in too_long
            else next(done)
            for k in range(len(items))
        ]

    # ------------------------------------------------------------------ generation

    def _generate(self, items: list[_Prepared], inputs: Any, lengths: list[int]) -> list[ChatResult]:
        from transformers import GenerationConfig, LogitsProcessorList

        sampling = items[0].request.sampling
        n, prompt_width = sampling.n, inputs["input_ids"].shape[1]
        max_new = max(1, min(sampling.max_tokens, self.context_len - prompt_width))
        sampler = self._sampler(items, n, prompt_width, lengths)
        shared = self.share_prefill and can_share(self.model, inputs, n)
        gen_config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            repetition_penalty=1.0,
            num_return_sequences=1 if shared else n,  # shared: the rows are repeated after the one prefill
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            if shared:
                gen_inputs, prefilled = shared_prefill(self.model, inputs, n)
            else:
                gen_inputs, prefilled = inputs, expanded_prefill_tokens(inputs, n)
            self.prefilled_tokens += prefilled
            out = self.model.generate(**gen_inputs, generation_config=gen_config, logits_processor=LogitsProcessorList([sampler]))
        rows = out[:, prompt_width:].tolist()
        return [self._result(rows[k * n : (k + 1) * n], lengths[k]) for k in range(len(items))]

    def _sampler(self, items: list[_Prepared], n: int, prompt_width: int, lengths: list[int]) -> RowSampler:
        temps, top_ps, top_ks, seeds, grammars, presence, repetition, pads = [], [], [], [], [], [], [], []
        for item, length in zip(items, lengths):
            s = item.request.sampling
            seed = s.seed if s.seed is not None else self.config.seed
            for j in range(n):  # generate repeats each prompt n times, consecutively
                temps.append(s.temperature)
                top_ps.append(s.top_p)
                top_ks.append(s.top_k_or_none or 0)
                seeds.append(seed * _SEED_STRIDE + j)
                grammars.append(item.grammar)
                presence.append(s.presence_penalty)
                repetition.append(s.repetition_penalty)
                pads.append(prompt_width - length)
        constraint = GrammarConstraint(grammars, self.vocab_size, self.eos_ids[0]) if any(g is not None for g in grammars) else None
        penalties = Penalties(presence, repetition, prompt_width, pads)
        return RowSampler(temps, top_ps, seeds, self.eos_ids[0], constraint, top_ks, penalties if penalties.active else None)

    def _result(self, rows: list[list[int]], prompt_tokens: int) -> ChatResult:
        texts, reasons, generated = [], [], 0
        for row in rows:
            end = next((i for i, tok in enumerate(row) if tok in self.eos_ids), None)
            kept = row if end is None else row[:end]
            generated += len(row) if end is None else end + 1
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
            reasons.append("length" if end is None else "stop")
        return ChatResult(texts=texts, prompt_tokens=prompt_tokens, completion_tokens=generated, finish_reasons=reasons)


def _text_only(messages: list[dict]) -> list[dict]:
    """Messages with list contents joined to strings (text chat templates expect strings)."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append({"role": msg["role"], "content": content})
    return out
