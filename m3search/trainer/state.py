"""Training state for resuming, without pickle: tensors in safetensors, everything else in JSON.

`trainer_state/` inside a checkpoint folder holds
- `state.json`: format + version, the step reached, the epoch and the batch position in it, the optimizer's
  non-tensor state (param groups, scalars), the AMP grad-scaler state, and the config;
- `tensors.safetensors`: the optimizer's per-parameter tensors, flattened to keys "optimizer.<param
  index>.<name>" (e.g. "optimizer.3.exp_avg"), and the RNG states ("rng.torch", "rng.cuda.<i>").
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from m3search.errors import ModelError

STATE_DIR = "trainer_state"
STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"
STATE_FORMAT = "m3search.trainer_state"
STATE_VERSION = 1


@dataclasses.dataclass
class Progress:
    step: int  # optimizer steps done
    epoch: int  # the epoch the next batch comes from
    batch_in_epoch: int  # index of the next batch in that epoch


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split torch's optimizer state dict into (tensors by flat key, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    rest = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    return tensors, rest


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    # JSON turned tuples (e.g. Adam's betas) into lists; give torch back what it wrote
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_state(
    folder: str | Path,
    progress: Progress,
    optimizer: torch.optim.Optimizer,
    config: dict,
    scaler_state: dict | None = None,
) -> Path:
    from safetensors.torch import save_file

    out = Path(folder) / STATE_DIR
    out.mkdir(parents=True, exist_ok=True)
    tensors, rest = flatten_optimizer_state(optimizer.state_dict())
    tensors.update(rng_tensors())
    save_file(tensors, str(out / TENSORS_FILE))
    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "progress": dataclasses.asdict(progress),
        "optimizer": rest,
        "grad_scaler": scaler_state,
        "config": config,
    }
    (out / STATE_FILE).write_text(json.dumps(meta, indent=1))
    return out


@dataclasses.dataclass
class LoadedState:
    progress: Progress
    optimizer_state: dict
    scaler_state: dict | None
    config: dict
    rng: dict[str, torch.Tensor]


def load_state(folder: str | Path) -> LoadedState:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_file = folder / STATE_DIR / STATE_FILE
    tensor_file = folder / STATE_DIR / TENSORS_FILE
    if not meta_file.is_file() or not tensor_file.is_file():
        raise ModelError(
            f"{folder} has no training state ({STATE_DIR}/{STATE_FILE} and {TENSORS_FILE}): resume from a "
            "checkpoint-* folder written by `m3search train fit`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"can't read {meta_file}: {e}") from None
    if meta.get("format") != STATE_FORMAT:
        raise ModelError(f"{meta_file}: format {meta.get('format')!r} is not {STATE_FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > STATE_VERSION:
        raise ModelError(f"{meta_file}: version {meta.get('version')!r} is newer than this m3search reads "
                         f"({STATE_VERSION}); upgrade m3search")
    tensors = load_file(str(tensor_file))
    return LoadedState(
        progress=Progress(**meta["progress"]),
        optimizer_state=unflatten_optimizer_state(tensors, meta["optimizer"]),
        scaler_state=meta.get("grad_scaler"),
        config=meta["config"],
        rng={k: v for k, v in tensors.items() if k.startswith("rng.")},
    )
