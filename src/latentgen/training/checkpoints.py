"""Training checkpoints: ``checkpoints/epoch{E}.pt`` = ``{"model_state", "meta"}``, saved atomically and
loaded with ``weights_only=True`` (nothing in the file is executed), the model rebuilt from its meta."""


from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from latentgen.models.architectures import build_model
from latentgen.training.runs import load_torch, save_torch_atomic



def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch_atomic({"model_state": state, "meta": meta}, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw ``{"model_state", "meta"}`` dict, loaded with ``weights_only=True`` and checked."""
    path = Path(path)
    obj = load_torch(path, "checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state"), dict) or not isinstance(obj.get("meta"), dict):
        raise ValueError(f"checkpoint {path} is not a latentgen checkpoint (expected keys model_state and meta)")
    missing = [k for k in ("arch", "dataset", "epoch", "num_classes") if k not in obj["meta"]]
    if missing:
        raise ValueError(f"checkpoint {path}: meta lacks {', '.join(missing)}")
    return obj


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path`` (``weights_only=True``): returns ``(model, meta)``, model in eval mode."""
    from latentgen.devices import resolve_device

    obj = read_checkpoint(path)
    meta = obj["meta"]
    options = dict(meta.get("model_options") or {})
    with torch.device("meta"):  # no time spent on an initialisation the checkpoint overwrites
        model = build_model(meta["arch"], meta["dataset"], **options)
    try:
        model.load_state_dict(obj["model_state"], strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not fit {meta['arch']} on {meta['dataset']}: "
                         f"{str(exc).splitlines()[0]}") from None
    model.to(resolve_device(device))
    model.eval()
    return model, meta
