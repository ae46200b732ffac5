"""Checkpoints that hold everything needed to continue exactly where a run stopped.

Layout of one checkpoint directory (Ray Train merges the workers' directories into one):
  .metadata, __<rank>_0.distcp   model + optimizer, sharded (torch.distributed.checkpoint)
  trainer_state.json             step, epoch, scheduler, metrics history (written by rank 0)
  rank_<rank>.pt                 per-worker data position, drop counts and RNG states

Sharded DCP state is used instead of gathering a full state dict on rank 0: each worker writes
only its own shards (no rank-0 memory spike for an 8B model with fp32 Adam moments, parallel
uploads), and DCP reshards on load if the number of workers changes. With frozen parameters
(LoRA, frozen vision tower) only the trainable ones are saved; the rest come from the student.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from zwz_ray.logs import get_logger

log = get_logger(__name__)

TRAINER_STATE = "trainer_state.json"


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def state_options(model: torch.nn.Module) -> StateDictOptions:
    frozen = any(not p.requires_grad for p in model.parameters())
    return StateDictOptions(ignore_frozen_params=frozen, strict=not frozen)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, ints, floats, strings and containers only, so that the rank file
    loads with ``torch.load(weights_only=True)`` (no pickled numpy objects, no arbitrary code on load)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    trainer_state: dict, rank_state: dict, rank: int) -> None:
    """Collective: every worker writes its shards and its own data position into ``path``."""
    os.makedirs(path, exist_ok=True)
    msd, osd = get_state_dict(model, optimizer, options=state_options(model))
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)
    torch.save({**rank_state, "rng": rng_state()}, os.path.join(path, rank_file(rank)))
    if rank == 0:
        with open(os.path.join(path, TRAINER_STATE), "w", encoding="utf-8") as fh:
            json.dump({**trainer_state, "scheduler": scheduler.state_dict()}, fh)


def load_checkpoint(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rank: int) -> tuple[dict, dict | None]:
    """Collective: restore model, optimizer, scheduler and RNG; returns (trainer_state, rank_state).

    ``rank_state`` is None when the checkpoint was written by fewer workers than now (the data
    position of this worker is then unknown and its epoch starts over).
    """
    options = state_options(model)
    msd, osd = get_state_dict(model, optimizer, options=options)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=options)
    with open(os.path.join(path, TRAINER_STATE), encoding="utf-8") as fh:
        trainer_state = json.load(fh)
    scheduler.load_state_dict(trainer_state.pop("scheduler"))
    rank_path = os.path.join(path, rank_file(rank))
    if not os.path.exists(rank_path):
        log.warning("checkpoint %s has no state for worker %d (fewer workers wrote it); its epoch restarts", path, rank)
        return trainer_state, None
    rank_state = torch.load(rank_path, weights_only=True)
    set_rng_state(rank_state.pop("rng"))
    return trainer_state, rank_state
