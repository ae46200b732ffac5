"""GRPO without Ray: the arithmetic against hand computations, the reward table, prompts, rollouts, filtering."""

from __future__ import annotations

import io
import math
import zlib

import pytest
import torch
from PIL import Image, ImageDraw

from zwz_ray.config import ConfigError, from_dict
from zwz_ray.train.config import DistillConfig
from zwz_ray.train.examples import Dropped
from zwz_ray.train.grpo_config import RewardConfig, RolloutConfig
from zwz_ray.train.grpo_loss import clipped_policy_loss, group_advantages, low_var_kl, token_weights
from zwz_ray.train.reward import Reward, load_function

MCQ = "What colour is the shape inside the red box?\nA. red\nB. blue\nC. green\nD. grey\nAnswer with the option's letter."
OPEN = "How many birds are on the wire?"
SHORT = "Colour?"


def png(i: int, size=(56, 56)) -> bytes:
    img = Image.new("RGB", size, (180 + 7 * i % 70, 200, 230))
    ImageDraw.Draw(img).rectangle([8, 8, 30, 30], outline=(255, 0, 0), width=3)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def rows(n: int, problem: str = SHORT, prefix: str = "r") -> list[dict]:
    return [{"id": f"{prefix}{i:02d}", "image": png(i), "problem": problem, "answer": "ABCD"[i % 4]} for i in range(n)]


# --------------------------------------------------------------------------- reward functions used by these tests
# (loaded by grpo.reward.function as "tests/test_grpo.py:<name>", also inside Ray Train workers)


def digit_share(response: str, row: dict) -> float:
    """Learnable by a random tiny model: the share of digits among the response's characters."""
    return sum(c.isdigit() for c in response) / max(len(response), 1)


def flat_or_checksum(response: str, row: dict) -> float:
    """Rows whose id starts with "flat" score the same for every response (no signal); others differ per response."""
    return 0.5 if row["id"].startswith("flat") else zlib.crc32(response.encode()) % 1000 / 1000


# --------------------------------------------------------------------------- the arithmetic


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.25, 0.5, 0.75]]))
    z = 0.5 / math.sqrt(1 / 3)  # |r - mean| / unbiased std, std of (1, 0, 0, 1) = sqrt(1/3)
    torch.testing.assert_close(adv[0], torch.tensor([z, -z, -z, z]), atol=1e-5, rtol=0)
    assert adv[1].abs().max() == 0  # all-equal group: no signal
    std = torch.tensor([0.0, 0.25, 0.5, 0.75]).std()
    torch.testing.assert_close(adv[2], (torch.tensor([0.0, 0.25, 0.5, 0.75]) - 0.375) / (std + 1e-6))
    with pytest.raises(ValueError, match="n >= 2"):
        group_advantages(torch.ones(3, 1))


def test_clipping_low_high_dual_and_token_mean_by_hand():
    ratios = torch.tensor([1.5, 0.5, 1.1, 4.0, 0.9])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0])
    old = torch.zeros(5)
    logp = torch.log(ratios).requires_grad_(True)
    # by hand: max(-A r, -A clip(r, 0.8, 1.3)), then for A < 0 min(., 3 |A|):
    # 1.5,+ -> -1.3 (clipped high); 0.5,- -> 0.8 (clipped low); 1.1,+ -> -1.1; 4.0,- -> 3.0 (dual); 0.9,- -> 0.9
    terms = clipped_policy_loss(logp, old, adv, token_weights([2, 3], "token-mean"), 0.2, 0.3, 3.0, 20.0)
    assert terms.loss_sum.item() == pytest.approx(-1.3 + 0.8 - 1.1 + 3.0 + 0.9)
    assert (terms.clip_high, terms.clip_low, terms.clip_dual) == (1, 1, 1)
    (terms.loss_sum / 5).backward()  # token-mean over the 5 tokens
    # d/dlogp of -A r = -A r where unclipped; clipped tokens get no gradient
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 0.0, -1.1, 0.0, 0.9]) / 5)
    seq = clipped_policy_loss(torch.log(ratios), old, adv, token_weights([2, 3], "seq-mean-token-mean"), 0.2, 0.3, 3.0, 20.0)
    assert seq.loss_sum.item() / 2 == pytest.approx(((-1.3 + 0.8) / 2 + (-1.1 + 3.0 + 0.9) / 3) / 2)
    no_dual = clipped_policy_loss(torch.log(ratios), old, adv, torch.ones(5), 0.2, 0.3, None, 20.0)
    assert no_dual.loss_sum.item() == pytest.approx(-1.3 + 0.8 - 1.1 + 4.0 + 0.9)
    huge = clipped_policy_loss(torch.tensor([100.0]), torch.zeros(1), torch.tensor([-1.0]), torch.ones(1), 0.2, 0.3, None, 20.0)
    assert huge.loss_sum.item() == pytest.approx(math.exp(20.0), rel=1e-5)  # log-ratio clamped before exp


def test_low_variance_kl_by_hand():
    kl = low_var_kl(torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([0.25, 0.25])))
    torch.testing.assert_close(kl, torch.tensor([0.5 - math.log(0.5) - 1.0, 0.0]))


# --------------------------------------------------------------------------- the reward table

MCQ_ROW = {"id": "m", "problem": MCQ, "answer": "B", "is_mcq": True,
           "options": {"A": "red", "B": "blue", "C": "green", "D": "grey"}, "question_type": "mcq"}
OPEN_ROW = {"id": "o", "problem": OPEN, "answer": "5", "is_mcq": False, "options": {}, "question_type": "open"}
TABLE = [  # (row, response, reward, rule)
    (MCQ_ROW, "<answer>B</answer>", 1.0, "exact"),
    (MCQ_ROW, "The box is blue. <answer>(B) blue</answer>", 1.0, "mcq_letter"),
    (MCQ_ROW, "<answer>blue</answer>", 1.0, "mcq_option_text"),
    (MCQ_ROW, "<answer>A</answer>", 0.0, "mcq_letter"),
    (MCQ_ROW, "<answer>A</answer> on second thought <answer>B</answer>", 0.0, "mcq_letter"),  # the first block counts
    (MCQ_ROW, "B", 1.0, "exact"),  # no tags: the whole response
    (MCQ_ROW, "<answer></answer>", 0.0, "no_answer"),
    (MCQ_ROW, "", 0.0, "no_answer"),
    (MCQ_ROW, "<answer>B" + " really" * 50 + "</answer>", 0.0, "no_answer"),  # >= 300 characters
    (MCQ_ROW, "It is B. " + "More reasoning. " * 20, 0.0, "no_answer"),  # untagged and >= 300 characters
    (OPEN_ROW, "<answer>five</answer>", 1.0, "normalized"),
    (OPEN_ROW, "<answer>5 birds</answer>", 1.0, "normalized"),
    (OPEN_ROW, "<answer>6</answer>", 0.0, "normalized"),
    (OPEN_ROW, "<answer>a small flock</answer>", 0.0, "undecided"),  # no judge configured: 0, counted as undecided
]


@pytest.mark.parametrize("row, response, reward, rule", TABLE)
def test_reward_table(row, response, reward, rule):
    (score,), = Reward(RewardConfig()).score([row], [[response]])
    assert (score.reward, score.rule) == (reward, rule)
    assert score.correct == (reward == 1.0)


def test_format_weight_and_custom_function():
    scores = Reward(RewardConfig(format_weight=0.5)).score([MCQ_ROW], [["<answer>B</answer>", "B", "<answer>A</answer>"]])[0]
    assert [s.reward for s in scores] == [1.0, 0.5, 0.5]
    spec = f"{__file__}:digit_share"
    assert load_function(spec)("a1b2", {}) == 0.5
    custom = Reward(RewardConfig(function=spec)).score([MCQ_ROW], [["12", "ab"]])[0]
    assert [(s.reward, s.rule) for s in custom] == [(1.0, "function"), (0.0, "function")]
    for bad in ("no_colon", f"{__file__}:missing", "/nowhere/x.py:f"):
        with pytest.raises(ValueError, match="grpo.reward.function"):
            load_function(bad)


def test_undecided_open_answers_go_to_the_llm_judge():
    from zwz_ray.config import EngineConfig

    judge = EngineConfig(backend="hf", model="tiny:text", device="cpu", dtype="float32")
    reward = Reward(RewardConfig(judge=judge, judge_max_tokens=16))
    scores = reward.score([OPEN_ROW, MCQ_ROW], [["<answer>a small flock</answer>", "<answer>five</answer>"],
                                                ["<answer>A or B</answer>"]])
    assert scores[0][0].rule in ("llm_judge", "error") and scores[0][1].rule == "normalized"
    assert scores[1][0].rule == "undecided"  # MCQ answers the rules cannot read are not sent to the judge
    assert reward.judge().engine.stats.calls == 1
    reward.close()


# --------------------------------------------------------------------------- config, prompts, rollouts


def grpo_config(**grpo) -> DistillConfig:
    return from_dict(DistillConfig, {"student": "tiny:qwen2_5_vl", "data": {"min_pixels": 3136, "max_pixels": 3136},
                                     "trainer": {"objective": "grpo", "precision": "fp32", "max_steps": 1, "micro_batch_size": 4},
                                     "optim": {"lr": 1e-3}, "output": {"tensorboard": False, "export": False},
                                     "grpo": {"rollout_batch_prompts": 2, "mini_batch_prompts": 2, "logprob_micro_batch": 4,
                                              "rollout": {"n": 2, "max_response_tokens": 4}, **grpo}})


def test_config_mistakes_fail_before_work():
    with pytest.raises(ConfigError, match="multiple of mini_batch_prompts"):
        grpo_config(rollout_batch_prompts=6, mini_batch_prompts=4)
    with pytest.raises(ConfigError, match="use_gpu"):
        grpo_config(rollout={"engine": "vllm"})
    with pytest.raises(ConfigError, match="minimum 2"):
        grpo_config(rollout={"n": 1})
    cfg = from_dict(DistillConfig, {"trainer": {"objective": "grpo", "num_workers": 4}, "grpo": {"rollout_batch_prompts": 8,
                                                                                                "mini_batch_prompts": 4}})
    assert cfg.grpo.updates_per_step() == 2 and cfg.grpo.rollout.n == 8 and cfg.grpo.clip_high == 0.3
    with pytest.raises(ConfigError, match="multiples of trainer.num_workers"):
        from_dict(DistillConfig, {"trainer": {"objective": "grpo", "num_workers": 3}, "grpo": {"rollout_batch_prompts": 8}})


@pytest.fixture(scope="module")
def vlm():
    from zwz_ray.models import load_vlm

    return load_vlm("tiny:qwen2_5_vl", min_pixels=3136, max_pixels=3136)


def test_overlong_and_bad_prompts_are_dropped_with_a_reason(vlm):
    from zwz_ray.train.rollout import PromptEncoder

    encode = PromptEncoder(vlm[1], max_prompt_tokens=256, max_image_bytes=1 << 20)
    prompt = encode({**rows(1, MCQ[:20])[0], "answer": "blue"})
    assert prompt.input_ids.numel() <= 256 and not prompt.is_mcq
    assert encode({**rows(1)[0], "problem": MCQ, "answer": "B"}).is_mcq
    cases = [({"problem": "why " * 200}, "too_long"), ({"image": None}, "missing_image"), ({"image": b"not a png"}, "bad_image"),
             ({"answer": " "}, "empty_answer"), ({"problem": ""}, "empty_problem")]
    for change, reason in cases:
        with pytest.raises(Dropped) as err:
            encode({**rows(1)[0], **change})
        assert err.value.reason == reason
    with pytest.raises(Dropped, match=r"tokens > grpo.rollout.max_prompt_tokens 256"):
        encode({**rows(1)[0], "problem": "why " * 200})


def test_rollouts_are_seeded_per_response_and_never_emit_image_tokens(vlm):
    import copy

    from zwz_ray.train.rollout import HFRollout, PromptEncoder, banned_token_ids

    model, processor = vlm
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_id in banned_token_ids(model)
    biased = copy.deepcopy(model)
    boost = torch.zeros(biased.lm_head.out_features)
    boost[image_id] = 1e4  # the image placeholder becomes by far the most likely next token everywhere
    biased.lm_head.register_forward_hook(lambda module, args, out: out + boost)
    encode = PromptEncoder(processor, 256, 1 << 20)
    p1, p2 = encode(rows(2)[0]), encode(rows(2)[1])
    plain = biased.generate(input_ids=p1.input_ids[None], attention_mask=torch.ones(1, len(p1.input_ids), dtype=torch.long),
                            pixel_values=p1.pixel_values, image_grid_thw=p1.image_grid_thw, max_new_tokens=2, do_sample=False)
    assert image_id in plain[0, len(p1.input_ids):].tolist()  # without the ban the model would emit it
    engine = HFRollout(biased, processor, RolloutConfig(n=3, max_response_tokens=6, hf_batch_prompts=1), torch.device("cpu"))
    both, alone = engine.generate([p1, p2], epoch=0), engine.generate([p2], epoch=0)
    assert [r.tolist() for r in both[1].responses] == [r.tolist() for r in alone[0].responses]  # independent of batch
    assert len({tuple(r.tolist()) for r in both[0].responses}) > 1  # sample index changes the draw
    assert engine.generate([p1], epoch=1)[0].responses[0].tolist() != both[0].responses[0].tolist()  # so does the epoch
    assert all(image_id not in r.tolist() for g in both for r in g.responses)
    batched = HFRollout(copy.deepcopy(biased), processor, RolloutConfig(n=3, max_response_tokens=6, hf_batch_prompts=2),
                        torch.device("cpu")).generate([p1, encode({**rows(1, MCQ)[0], "id": "long"}), p2], epoch=0)
    assert [len(g.responses) for g in batched] == [3, 3, 3] and batched[0].prompt.id == p1.id
    assert [r.tolist() for r in batched[2].responses] == [r.tolist() for r in alone[0].responses]  # a batch of its own
    assert all(image_id not in r.tolist() for g in batched for r in g.responses)
    greedy = HFRollout(biased, processor, RolloutConfig(n=2, max_response_tokens=4, temperature=0.0), torch.device("cpu"))
    assert all(image_id not in r.tolist() for r in greedy.generate([p1], 0)[0].responses)


# --------------------------------------------------------------------------- the recipe in-process (gloo, 1 worker)




def test_online_filtering_drops_all_equal_groups_and_refills(process_group):
    from train_rows import ListRows

    from zwz_ray.train.grpo import GRPORecipe
    from zwz_ray.train.loop import WorkerContext

    data = [rows(1, prefix="flat0")[0], rows(1, prefix="keep1")[0], rows(1, prefix="flat2")[0], rows(1, prefix="keep3")[0]]
    cfg = grpo_config(online_filtering=True, filter_max_tries=3, reward={"function": f"{__file__}:flat_or_checksum"})
    recipe = GRPORecipe(cfg, WorkerContext(0, 1, torch.device("cpu")), ListRows(data, False, 0))
    recipe.setup()
    trained = []
    recipe._samples = lambda groups, scores, f=recipe._samples: trained.extend(g.prompt.id for g in groups) or f(groups, scores)
    recipe.train()
    (record,) = recipe.metrics.history
    assert trained == ["keep100", "keep300"]  # both flat groups were dropped and refilled from the stream
    assert record["filtered_groups"] == 2 and record["zero_variance_groups"] == 0.5 and record["updates"] == 1
    assert record["samples"] == 8 and math.isfinite(record["loss"])  # 4 groups sampled, 2 trained
    recipe.close()


def test_kl_to_a_frozen_reference_and_seq_mean_aggregation(process_group):
    from train_rows import ListRows

    from zwz_ray.train.grpo import GRPORecipe
    from zwz_ray.train.loop import WorkerContext

    cfg = grpo_config(kl_coef=0.5, loss_agg="seq-mean-token-mean", rollout_batch_prompts=2, mini_batch_prompts=1,
                      reward={"function": f"{__file__}:flat_or_checksum"})
    recipe = GRPORecipe(cfg, WorkerContext(0, 1, torch.device("cpu")), ListRows(rows(2), False, 0))
    recipe.setup()
    assert recipe.reference is not None and not any(p.requires_grad for p in recipe.reference.parameters())
    recipe.train()
    (record,) = recipe.metrics.history
    # update 1 starts from the reference (KL 0), update 2 has moved away from it
    assert record["updates"] == 2 and record["kl"] > 0 and math.isfinite(record["loss"])
    assert record["loss"] == pytest.approx(record["pg_loss"] + 0.5 * record["kl"])
    recipe.close()


def test_lora_is_merged_into_the_weight_stream(process_group, vlm):
    import copy

    from zwz_ray.train.config import LoraConfig, TrainerConfig
    from zwz_ray.train.parallel import apply_lora, shard_model
    from zwz_ray.train.rollout import full_weights

    model, _ = vlm
    torch.manual_seed(0)
    peft_model = apply_lora(copy.deepcopy(model), LoraConfig(enabled=True, rank=4, dropout=0.0))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # adapters start at B = 0; make them matter
    ids = torch.tensor([[1, 98, 96, 273, 212, 9]])
    with torch.no_grad():
        expected = peft_model.get_base_model().model.language_model(input_ids=ids).last_hidden_state
    sharded = shard_model(peft_model, TrainerConfig(precision="fp32"), torch.device("cpu"))
    stream = dict(full_weights(sharded, torch.device("cpu")))
    plain = copy.deepcopy(model)
    assert set(stream) == {n for n, _ in plain.named_parameters()}  # plain HF names: no lora_, no base_layer
    missing, unexpected = plain.load_state_dict(stream, strict=False)
    tied = {n for n, _ in plain.named_parameters(remove_duplicate=False)} - set(stream)  # e.g. lm_head tied to the embeddings
    assert not unexpected and set(missing) <= tied
    with torch.no_grad():
        got = plain.model.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
