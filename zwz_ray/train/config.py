"""Configuration of the distillation job (``python -m pipelines.distill``).

Defaults follow the paper where it gives a value (AdamW weight decay 1e-2, grad clip 1.0,
3 epochs, constant schedule, images 512^2..4096^2 pixels, vision tower trained, FSDP with
offload on GPU). The paper trains with GRPO at lr 1e-6; the SFT default is 1e-5 (see OptimConfig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zwz_ray.config import ConfigError, RayConfig, bounded, listed, model_ref, section, setting, uri
from zwz_ray.train.grpo_config import GRPOConfig

# The attention and MLP projections of Qwen-VL decoders (and of Qwen2.5-VL vision MLPs).
QWEN_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainDataConfig:
    """The VQA rows written by synthesis (id, image, problem, answer) and how they become tokens."""

    path: str | None = uri("outputs/synth/kept", doc="parquet file or folder of synthesis rows (local or fsspec URI)")
    min_pixels: int = bounded(512 * 512, 1, doc="image processor's pixel floor (paper: 512^2)")
    max_pixels: int = bounded(4096 * 4096, 1, doc="image processor's pixel ceiling (paper: 4096^2)")
    max_seq_len: int = bounded(32768, 16, doc="longer rows (prompt + image tokens + answer) are dropped as too_long, never cut")
    shuffle_buffer: int = bounded(256, 0, doc="rows in each worker's per-epoch shuffle buffer (seeded by seed + epoch); 0 keeps file order")
    max_image_bytes: int = bounded(64 * 1024 * 1024, 1024, doc="larger encoded images are dropped as bad_image")
    # A Ray Dataset handed to run_distill (e.g. the synthesis pipeline) is re-executed by every epoch and
    # every retry; materialising it first makes all epochs and retries see the same rows without re-running
    # the pipeline, streaming it overlaps synthesis and training. Parquet at data.path is simply re-read.
    materialize: Literal["auto", "always", "never"] = setting(
        "auto", doc="a given Ray Dataset: auto materialises it when training runs more than one epoch; never streams it")

    def validate(self, where: str) -> None:
        if self.min_pixels > self.max_pixels:
            raise ConfigError(f"{where}.min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")


@dataclass
class TrainerConfig:
    """Workers, batch shape, precision and sharding."""

    objective: Literal["sft", "grpo"] = setting("sft", doc="training objective: sft, or grpo (the RL recipe, see the grpo section)")
    num_workers: int = bounded(1, 1, doc="Ray Train workers (FSDP2 shards)")
    use_gpu: bool = setting(False, doc="one GPU per worker (NCCL); false: CPU workers over gloo")
    cpus_per_worker: float = bounded(1.0, 0.0, doc="CPUs reserved per worker")
    epochs: int = bounded(3, 1, doc="passes over the rows (paper: 3)")
    max_steps: int | None = bounded(None, 1, doc="stop after this many optimizer steps; null: run all epochs")
    micro_batch_size: int = bounded(1, 1, doc="rows per worker per forward pass")
    grad_accum_steps: int = bounded(1, 1, doc="micro batches per optimizer step")
    precision: Literal["auto", "bf16", "fp32"] = setting("auto", doc="auto: bf16 mixed precision on GPU, fp32 on CPU")
    activation_checkpointing: bool = setting(False, doc="recompute activations in backward (less memory, more compute)")
    fsdp_offload: bool = setting(False, doc="keep parameters and optimizer state on CPU (GPU only)")
    reshard_after_forward: bool = setting(True, doc="FSDP2: free gathered parameters after forward (less memory, more traffic)")
    load: Literal["sharded", "full"] = setting("sharded", doc=(
        "sharded: rank 0 reads the checkpoint, the other workers build the model on the meta device and receive "
        "their shards by broadcast (host memory about full/num_workers per worker); full: every worker loads the "
        "whole model in fp32, then shards it"))
    load_dtype: Literal["auto", "float32", "bfloat16"] = setting("auto", doc=(
        "dtype in which rank 0 reads the checkpoint for a sharded load (auto: the checkpoint's own); "
        "the master shards are fp32 whatever it is"))
    freeze_vision: bool = setting(False, doc="train the language model only (paper: the vision tower is trained too)")
    seed: int = setting(0, doc="seed of initial weights (LoRA), shuffles and dropout")
    log_every: int = bounded(1, 1, doc="one console line per this many steps")
    # Ray Train's controller collects each step's ray.train.report when it polls the workers (every 2 s by
    # default) and a worker's next report waits for that: steps faster than the poll are slowed to it.
    controller_poll_s: float | None = bounded(
        None, 0.01, doc="sets RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for this job unless the environment does; null: Ray's 2 s")

    @property
    def global_batch_size(self) -> int:
        return self.num_workers * self.micro_batch_size * self.grad_accum_steps

    def validate(self, where: str) -> None:
        if self.fsdp_offload and not self.use_gpu:
            raise ConfigError(f"{where}.fsdp_offload needs use_gpu: true (CPU training already keeps everything on CPU)")
        if self.precision == "bf16" and not self.use_gpu:
            raise ConfigError(f"{where}.precision 'bf16' needs use_gpu: true; use 'fp32' or 'auto' on CPU")


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    # The paper's GRPO recipe uses lr 1e-6 (constant); SFT on short answers tolerates 10x more.
    lr: float = bounded(1e-5, 0.0, doc="peak learning rate (the SFT default; the paper's GRPO uses 1e-6)")
    weight_decay: float = bounded(1e-2, 0.0, doc="AdamW weight decay (paper: 1e-2)")
    betas: list[float] = listed(0.9, 0.999, doc="AdamW betas")
    eps: float = bounded(1e-8, 0.0, doc="AdamW epsilon")
    grad_clip: float = bounded(1.0, 0.0, doc="gradient norm clip (paper: 1.0); 0 disables clipping")
    schedule: Literal["constant", "cosine"] = setting("constant", doc="learning-rate schedule after warm-up (paper: constant)")
    warmup_steps: int = bounded(0, 0, doc="linear warm-up steps")
    min_lr_ratio: float = bounded(0.0, 0.0, 1.0, doc="cosine floor as a fraction of lr")

    def validate(self, where: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{where}.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class LoraConfig:
    """Low-rank adapters via peft. Off by default: the paper fine-tunes all weights."""

    enabled: bool = setting(False, doc="train LoRA adapters instead of all weights")
    rank: int = bounded(16, 1, doc="adapter rank")
    alpha: float = bounded(32.0, 0.0, doc="adapter scaling (alpha / rank)")
    dropout: float = bounded(0.05, 0.0, 1.0, doc="dropout on the adapters' input")
    target_modules: list[str] = listed(*QWEN_LORA_TARGETS, doc="module names that get adapters")
    include_vision: bool = setting(False, doc="also put adapters into the vision tower (default: the language model only)")
    export: Literal["merged", "adapter", "both"] = setting("merged", doc="export: merged (a plain HF model), adapter (peft) or both")


@dataclass
class CheckpointConfig:
    """Where Ray Train keeps checkpoints; the same storage_path + run_name resumes a run."""

    storage_path: str = uri("outputs/distill/runs", doc="Ray Train storage: local folder or fsspec URI (s3://, gs://)")
    run_name: str = setting("distill", doc="run folder under storage_path; a re-run with the same name resumes")
    every_steps: int = bounded(50, 1, doc="checkpoint every this many optimizer steps (and at the end)")
    num_to_keep: int = bounded(2, 1, doc="checkpoints kept; older ones are deleted")
    max_failures: int = bounded(0, -1, doc="worker crashes retried from the last checkpoint; -1: forever")


@dataclass
class OutputConfig:
    """Metrics, summary and the exported Hugging Face model."""

    dir: str = uri("outputs/distill/laptop", doc="metrics, summary and exports: local folder or fsspec URI")
    export: bool = setting(True, doc="write <dir>/model (save_pretrained of model + processor)")
    export_dtype: Literal["auto", "float32", "bfloat16"] = setting("auto", doc="dtype of the export; auto: bfloat16 after bf16 training")
    tensorboard: bool = setting(True, doc="event files under <dir>/tensorboard when the package is installed")


@dataclass
class DistillConfig:
    """Distil R2I rows into a student VLM with Ray Train (SFT now; GRPO shares the loop)."""

    student: str = model_ref("tiny:qwen2_5_vl", doc="the student: HF id, local directory, URI or tiny:<family>")
    data: TrainDataConfig = section(TrainDataConfig, doc="the training rows")
    trainer: TrainerConfig = section(TrainerConfig, doc="workers, batch shape, precision and sharding")
    optim: OptimConfig = section(OptimConfig, doc="AdamW and the learning-rate schedule")
    lora: LoraConfig = section(LoraConfig, doc="low-rank adapters (off: full fine-tuning)")
    checkpoint: CheckpointConfig = section(CheckpointConfig, doc="checkpoints and resume")
    output: OutputConfig = section(OutputConfig, doc="metrics, summary and the exported model")
    grpo: GRPOConfig = section(GRPOConfig, doc="the GRPO recipe (trainer.objective: grpo)")
    ray: RayConfig = section(RayConfig, doc="the Ray runtime")

    def validate(self, where: str) -> None:
        if self.lora.enabled and self.lora.include_vision and self.trainer.freeze_vision:
            raise ConfigError(f"{where}: lora.include_vision and trainer.freeze_vision contradict each other")
        if self.trainer.objective == "grpo":
            self.grpo.check(self, f"{where}.grpo")
