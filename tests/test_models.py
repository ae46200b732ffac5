"""Model references, tiny offline models and loaders (zwz_ray.models)."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from zwz_ray import models

QWEN_FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def built(cache):
    """Build every tiny family once for this module; returns family -> local dir."""
    return {family: models.resolve_model(f"tiny:{family}", cache_dir=cache) for family in models.TINY_FAMILIES}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    picture = Image.new("RGB", (160, 120), (240, 240, 240))
    picture.paste((200, 20, 20), (40, 30, 90, 80))
    return picture


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def _chat(processor, text: str = "What colour is the cup?") -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# ------------------------------------------------------------------------------------ package layout

# zwz_ray/models/ in import order: each module may import only modules listed before it.
MODULE_ORDER = ["processors", "tiny_tokenizers", "tiny", "references", "loaders", "__init__"]


def _package_imports(name: str) -> set[str]:
    """zwz_ray.models submodules that ``name`` imports anywhere (top level or inside functions)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(models.__file__).parent / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found |= {m.split(".")[2] for m in modules if m.startswith("zwz_ray.models.") and m.count(".") == 2}
    return found


def test_package_imports_form_the_documented_dag():
    from pathlib import Path

    on_disk = {p.stem for p in Path(models.__file__).parent.glob("*.py")}
    assert on_disk == set(MODULE_ORDER)
    for index, name in enumerate(MODULE_ORDER):
        later = _package_imports(name) - set(MODULE_ORDER[:index])
        assert not later, f"zwz_ray.models.{name} imports {sorted(later)}, which come after it in {MODULE_ORDER}"


def test_importing_models_loads_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = "import sys, zwz_ray.models; print(sorted(m for m in ('torch', 'transformers', 'fsspec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_tiny_family_has_a_builder():
    from zwz_ray.models import tiny

    assert set(tiny.BUILDERS) == set(models.TINY_FAMILIES) == {"qwen2_5_vl", "qwen3_vl", "text", "idefics3", "sam3"}


# ------------------------------------------------------------------------------------ references


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        models.resolve_model("tiny:llama9000")
    for family in models.TINY_FAMILIES:
        assert family in str(err.value)


def test_tiny_references_parse():
    assert models.is_tiny("tiny:qwen3_vl@3") and not models.is_tiny("Qwen/Qwen3-VL-2B-Instruct")
    assert models.parse_tiny("tiny:qwen3_vl@3") == ("qwen3_vl", 3)
    assert models.parse_tiny("tiny:text") == ("text", 0)
    with pytest.raises(ValueError, match="seed"):
        models.parse_tiny("tiny:text@x")


def test_hub_ids_pass_through_and_local_dirs_stay(tmp_path, monkeypatch):
    assert models.resolve_model("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    assert models.resolve_model(f"file://{tmp_path}") == str(tmp_path)  # file:// is local (zwz_ray.uris)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    assert models.resolve_model("~/ckpt") == str(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="ZWZ_CACHE_DIR"):
        models.resolve_model("tiny:text", cache_dir="s3://bucket/cache")


def test_unreachable_hub_id_has_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="tiny:<family>"):
        models.load_text_model("zwz-ray-tests/no-such-model")


def test_resolve_dtype():
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert models.resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        models.resolve_dtype("int3", "cpu")


def test_model_family_from_config(built):
    for family, path in built.items():
        assert models.model_family(path) == family
        assert models.model_family(f"tiny:{family}") == family


def test_remote_uri_is_copied_into_the_cache(built, cache):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.put(built["text"] + "/", "/zwz/text-model/", recursive=True)
    local = models.resolve_model("memory://zwz/text-model", cache_dir=cache)
    assert local.startswith(cache) and os.path.isfile(os.path.join(local, "config.json"))
    assert models.model_family(local) == "text"
    assert models.resolve_model("memory://zwz/text-model", cache_dir=cache) == local


def test_concurrent_builds_share_one_directory(tmp_path):
    results, errors = [], []

    def build():
        try:
            results.append(models.resolve_model("tiny:text@7", cache_dir=str(tmp_path)))
        except Exception as err:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["text-s7-v1"]


# ------------------------------------------------------------------------------------ tiny builds

# sha256 (first 16 hex digits) over every saved file of a tiny build: weights, tokenizer, configs,
# chat template. The laptop configs' relaxed thresholds are tuned to exactly these models, so a builder
# change that alters one byte must bump BUILDER_VERSION, retune configs/*/laptop.yaml and re-record
# these values with:
#   python -c "from tests.test_models import record_tiny_digests; record_tiny_digests()"
TINY_DIGESTS = {
    "tiny:qwen2_5_vl@0": "17942faaad1025ed",
    "tiny:qwen3_vl@0": "f28611e52002903b",
    "tiny:text@0": "2e8baebd5d251e6b",
    "tiny:idefics3@0": "1a79ef109999ce8a",
    "tiny:sam3@0": "751f2a6456f1a34a",
    "tiny:sam3@5": "5c6cae3003004a1f",
}


def _build_digest(path: str) -> tuple[str, dict[str, str]]:
    """One digest of a saved build plus one per file; JSON files drop the transformers version that wrote them."""
    files = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as handle:
            data = handle.read()
        if name.endswith(".json"):
            content = json.loads(data)
            if isinstance(content, dict):
                content.pop("transformers_version", None)
            data = json.dumps(content, sort_keys=True).encode()
        files[name] = hashlib.sha256(data).hexdigest()
    total = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return total, files


def record_tiny_digests(cache_dir: str | None = None) -> None:
    """Print TINY_DIGESTS as built by the current builders (into a fresh temporary cache by default)."""
    import tempfile

    cache_dir = cache_dir or tempfile.mkdtemp(prefix="zwz_tiny_digests_")
    for ref in TINY_DIGESTS:
        print(f'    "{ref}": "{_build_digest(models.resolve_model(ref, cache_dir=cache_dir))[0]}",')


@pytest.mark.parametrize("ref", sorted(TINY_DIGESTS))
def test_tiny_builds_are_bit_identical_to_the_recorded_ones(ref, cache):
    total, files = _build_digest(models.resolve_model(ref, cache_dir=cache))
    assert total == TINY_DIGESTS[ref], f"{ref} changed; per-file sha256: {files}"


def test_build_inside_a_process_group_runs_in_a_subprocess_with_the_same_bytes(tmp_path):
    """A Train worker that is not rank 0 must still write the weights (save_pretrained skips them there)."""
    from pathlib import Path

    from zwz_ray.models import tiny

    out = tmp_path / "text"
    out.mkdir()
    tiny.build_in_subprocess("text", Path(out), 0)
    assert _build_digest(str(out))[0] == TINY_DIGESTS["tiny:text@0"]


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_tiny_build_is_deterministic_in_the_seed(family, built, tmp_path):
    again = _weights(models.resolve_model(f"tiny:{family}@0", cache_dir=str(tmp_path / "a")))
    other = _weights(models.resolve_model(f"tiny:{family}@1", cache_dir=str(tmp_path / "b")))
    first = _weights(built[family])
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "text", "idefics3"])
def test_tokenizer_special_tokens_and_template(family, built):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built[family])
    config = AutoConfig.from_pretrained(built[family])
    assert tokenizer.is_fast and len(tokenizer) <= config.get_text_config().vocab_size
    text = '{"answer": "B", "count": 42}'
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    if family in QWEN_FAMILIES:
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    if family == "idefics3":
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert "hi" in prompt and prompt != tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_tokenizer_works_with_xgrammar(built):
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built["qwen2_5_vl"])
    info = xgr.TokenizerInfo.from_huggingface(tokenizer)
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_builtin_json_grammar())
    assert all(matcher.accept_token(i) for i in tokenizer('{"answer": "B"}', add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------ loading and running


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_qwen_vlm_trains_and_generates(family, built, image):
    model, processor = models.load_vlm(built[family], max_pixels=128 * 128)
    assert not model.training and processor.tokenizer.padding_side == "left"
    assert processor.image_processor.size["longest_edge"] == 128 * 128

    prompt = _chat(processor)
    inputs = processor(images=[image], text=[prompt + "red<|im_end|>"], return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[:, :-3] = -100
    model.train()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()

    batch = processor(
        images=[image, image], text=[prompt, _chat(processor, "How many cups?")], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=True, top_k=0)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_text_model_generates(built):
    model, tokenizer = models.load_text_model(built["text"])
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is 5 the same as five?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=5, do_sample=True)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_idefics3_generates_in_transformers(built, image):
    model, processor = models.load_vlm(built["idefics3"])
    inputs = processor(images=[[image]], text=[_chat(processor)], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_sam3_grounds_a_text_prompt(built, image):
    model, processor = models.load_grounding(built["sam3"])
    inputs = processor(images=image, text="red cup", return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    (result,) = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[(image.height, image.width)]
    )
    boxes, scores = result["boxes"], result["scores"]
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(scores) > 0
    assert ((scores >= 0) & (scores <= 1)).all()
    assert result["masks"].shape[1:] == (image.height, image.width)
    (detections,) = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(120, 160)])
    assert torch.allclose(detections["boxes"], boxes)


# ------------------------------------------------------------------------------------ vLLM


@pytest.mark.vllm
def test_idefics3_runs_in_vllm(built, image):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    vllm = pytest.importorskip("vllm")

    llm = vllm.LLM(
        model=built["idefics3"],
        enforce_eager=True,
        max_model_len=512,
        max_num_seqs=4,
        dtype="float32",
        kv_cache_memory_bytes=64 * 1024**2,
        limit_mm_per_prompt={"image": 1},
        seed=0,
    )
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": "What colour is the cup?"}],
        }
    ]
    (result,) = llm.chat(messages, vllm.SamplingParams(n=4, temperature=1.0, max_tokens=6, seed=0))
    assert len(result.outputs) == 4 and all(len(o.token_ids) > 0 for o in result.outputs)
