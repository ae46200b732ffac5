"""Configuration of the distillation job (``python -m pipelines.distill``).

Defaults follow the paper where it gives a value (AdamW weight decay 1e-2, grad clip 1.0,
3 epochs, constant schedule, images 512^2..4096^2 pixels, vision tower trained, FSDP with
offload on GPU). The paper trains with GRPO at lr 1e-6; the SFT default is 1e-5 (see OptimConfig).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from zwz_ray.config import ConfigError, RayConfig, bounded, uri
from zwz_ray.train.grpo_config import GRPOConfig

# The attention and MLP projections of Qwen-VL decoders (and of Qwen2.5-VL vision MLPs).
QWEN_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainDataConfig:
    """The VQA rows written by synthesis (id, image, problem, answer) and how they become tokens."""

    path: str | None = uri("outputs/synth/kept", doc="parquet file or folder (local or fsspec URI)")
    min_pixels: int = bounded(512 * 512, 1)  # paper: images 512^2 .. 4096^2 pixels
    max_pixels: int = bounded(4096 * 4096, 1)
    # A row longer than this (prompt + image tokens + answer) is dropped as "too_long", never cut.
    max_seq_len: int = bounded(32768, 16)
    # Rows in the per-epoch shuffle buffer of each worker (seeded by seed + epoch); 0 keeps file order.
    shuffle_buffer: int = bounded(256, 0)
    max_image_bytes: int = bounded(64 * 1024 * 1024, 1024)
    # A Ray Dataset handed to run_distill (e.g. the synthesis pipeline) is re-executed by every epoch
    # and every retry. "auto" materialises it in the object store first when training runs more than
    # one epoch, so that all epochs and retries see the same rows without re-running the pipeline;
    # "never" streams it (one epoch overlaps synthesis and training). Parquet at data.path is re-read.
    materialize: Literal["auto", "always", "never"] = "auto"

    def validate(self, where: str) -> None:
        if self.min_pixels > self.max_pixels:
            raise ConfigError(f"{where}.min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")


@dataclass
class TrainerConfig:
    """Workers, batch shape, precision and sharding."""

    objective: Literal["sft", "grpo"] = "sft"  # grpo: the RL recipe, configured in the grpo section
    num_workers: int = bounded(1, 1)
    use_gpu: bool = False
    cpus_per_worker: float = bounded(1.0, 0.0)
    epochs: int = bounded(3, 1)  # paper: 3 epochs
    max_steps: int | None = bounded(None, 1)  # optimizer steps; None = run all epochs
    micro_batch_size: int = bounded(1, 1)  # rows per worker per forward pass
    grad_accum_steps: int = bounded(1, 1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 mixed precision on GPU, fp32 on CPU
    activation_checkpointing: bool = False
    fsdp_offload: bool = False  # parameters and optimizer state on CPU (GPU only)
    reshard_after_forward: bool = True
    freeze_vision: bool = False  # paper: the vision tower is trained too
    seed: int = 0
    log_every: int = bounded(1, 1)  # one console line per this many steps
    # Ray Train's controller collects each step's ray.train.report when it polls the workers (every 2 s by
    # default) and a worker's next report waits for that: steps faster than the poll are slowed to it.
    # A value here sets RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for this job unless the environment already does.
    controller_poll_s: float | None = bounded(None, 0.01)
    # TESTING ONLY: the last worker raises right after this optimizer step on a run that did not
    # resume from a checkpoint. Off (None) by default; used to test crash recovery.
    fault_injection_step: int | None = bounded(None, 1)

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

    # SFT default. The paper's GRPO recipe uses lr 1e-6 (constant); SFT on short answers tolerates 10x more.
    lr: float = bounded(1e-5, 0.0)
    weight_decay: float = bounded(1e-2, 0.0)  # paper
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = bounded(1e-8, 0.0)
    grad_clip: float = bounded(1.0, 0.0)  # paper; 0 disables clipping
    schedule: Literal["constant", "cosine"] = "constant"  # paper: constant
    warmup_steps: int = bounded(0, 0)
    min_lr_ratio: float = bounded(0.0, 0.0, 1.0)  # cosine floor as a fraction of lr

    def validate(self, where: str) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{where}.betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class LoraConfig:
    """Low-rank adapters via peft. Off by default: the paper fine-tunes all weights."""

    enabled: bool = False
    rank: int = bounded(16, 1)
    alpha: float = bounded(32.0, 0.0)
    dropout: float = bounded(0.05, 0.0, 1.0)
    target_modules: list[str] = field(default_factory=lambda: list(QWEN_LORA_TARGETS))
    # Adapters go into the language model only unless this is true.
    include_vision: bool = False
    # Final export: "merged" (a plain HF model), "adapter" (peft adapter only) or "both".
    export: Literal["merged", "adapter", "both"] = "merged"


@dataclass
class CheckpointConfig:
    """Where Ray Train keeps checkpoints; the same storage_path + run_name resumes a run."""

    storage_path: str = uri("outputs/distill/runs", doc="local folder or fsspec URI (s3://, gs://)")
    run_name: str = "distill"
    every_steps: int = bounded(50, 1)
    num_to_keep: int = bounded(2, 1)
    max_failures: int = bounded(0, -1)  # worker crashes retried from the last checkpoint; -1 = forever

    def resolved_storage_path(self) -> str:
        """Ray Train needs an absolute local path (URIs pass unchanged)."""
        return self.storage_path if "://" in self.storage_path else os.path.abspath(self.storage_path)


@dataclass
class OutputConfig:
    """Metrics, summary and the exported Hugging Face model."""

    dir: str = uri("outputs/distill/laptop", doc="local folder or fsspec URI")
    export: bool = True  # write <dir>/model (save_pretrained of model + processor)
    export_dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 after bf16 training
    tensorboard: bool = True  # event files under <dir>/tensorboard when the package is installed


@dataclass
class DistillConfig:
    """Distil R2I rows into a student VLM with Ray Train (SFT now; GRPO shares the loop)."""

    student: str = "tiny:qwen2_5_vl"
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self, where: str) -> None:
        if self.lora.enabled and self.lora.include_vision and self.trainer.freeze_vision:
            raise ConfigError(f"{where}: lora.include_vision and trainer.freeze_vision contradict each other")
        if self.trainer.objective == "grpo":
            self.grpo.check(self, f"{where}.grpo")
