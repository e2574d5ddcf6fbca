"""Export a trained ViT Shapley / FastSHAP explainer as safetensors weights plus a small JSON config, and load it.

A Lightning checkpoint carries the optimizer, the loops and pickled metadata; a colleague who only wants to explain
images needs none of that, and a file from the internet should not be unpickled at all. The export is two files:

- ``<name>.safetensors``: every tensor of :class:`~lit_xai.algorithms.vit_shapley.ExplainerModule` (the explainer
  network, the frozen surrogate, the cached ``v(∅)``), in the safetensors format, which stores raw tensors only
  and cannot run code when read;
- ``<name>.json``: the settings that rebuild the networks (head, link, normalisation, the surrogate's backbone,
  players and masker) and, when the checkpoint has them, the class names, readable by a person.

Both are written atomically (temporary file, then rename; JSON last), so a killed export never leaves a file that
loads. The method is ViT Shapley (Covert, Kim & Lee, ICLR 2023) / FastSHAP (Jethani et al., ICLR 2022).

From the shell: ``python -m lit_xai.algorithms.vit_shapley.export outputs/digits/explainer/checkpoints/best.ckpt
exported/digits_explainer`` writes ``exported/digits_explainer.{safetensors,json}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from lit_xai.algorithms.vit_shapley.lightning_model import ExplainerModule
from lit_xai.io import atomic_open, atomic_write_json

__all__ = ["export_explainer", "load_explainer", "FORMAT"]

FORMAT = "lit_xai.vit_shapley.explainer/1"
# The settings that rebuild an ExplainerModule; training-only and path-like settings are not exported.
_CONFIG_KEYS = ("head", "head_kwargs", "num_masks", "link", "normalization", "surrogate_spec")


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``x``, ``x.json`` or ``x.safetensors`` -> (weights, config)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _plain(value: Any, key: str) -> Any:
    """JSON-ready copy of a setting (tuples become lists); anything else is a clear error."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, key) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"cannot export setting {key}={value!r} ({type(value).__name__}) to JSON; use numbers, strings or lists"
    )


def export_explainer(
    module: ExplainerModule, path: str | Path, class_names: list[str] | None = None
) -> tuple[Path, Path]:
    """Write ``module`` as ``<path>.safetensors`` + ``<path>.json``.

    Args:
        module: a trained explainer (e.g. ``ExplainerModule.load_from_checkpoint(...)``).
        path: the files' common name, with or without a ``.json`` / ``.safetensors`` suffix.
        class_names: the names of the classes, written to the JSON's ``class_names`` (the command takes them from
            the checkpoint, where ``train.py`` stores the data's), so that whoever reads the files knows what
            class 3 is.

    Returns:
        ``(weights_path, config_path)``.
    """
    if not isinstance(module, ExplainerModule):
        raise ValueError(f"export_explainer needs an ExplainerModule, got {type(module).__name__}")
    weights_path, config_path = _paths(path)
    config = {key: _plain(module.hparams.get(key), key) for key in _CONFIG_KEYS}
    payload = {"format": FORMAT, "config": config}
    if class_names:
        payload["class_names"] = [str(name) for name in class_names]
    # Clones: safetensors refuses tensors that share memory, and a state dict may hold views of one storage.
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in module.state_dict().items()}
    with atomic_open(weights_path, "wb") as handle:
        handle.write(save_safetensors(tensors, metadata={"format": FORMAT}))
    # The config is written last: a config file on disk means its weights are complete.
    atomic_write_json(config_path, payload)
    return weights_path, config_path


def load_explainer(path: str | Path, map_location: str | torch.device = "cpu") -> ExplainerModule:
    """Rebuild an :class:`ExplainerModule` from :func:`export_explainer`'s files (no pickle involved).

    Args:
        path: the files' common name, or either file.
        map_location: device of the returned module.

    Returns:
        the explainer in eval mode.
    """
    weights_path, config_path = _paths(path)
    for file in (config_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(
                f"exported explainer file not found: {file} (export_explainer writes <name>.json and "
                f"<name>.safetensors side by side)"
            )
    try:
        payload = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); export the explainer again") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{config_path} is not an exported ViT Shapley explainer (format {found!r}, expected {FORMAT!r})"
        )
    config = dict(payload.get("config") or {})
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown or not isinstance(config.get("surrogate_spec"), dict):
        raise ValueError(
            f"{config_path} has unknown settings {unknown} or no surrogate_spec; export it again"
        )
    try:
        state = load_safetensors(weights_path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise ValueError(
            f"{weights_path} is not a readable safetensors file ({err}); it is truncated or corrupt, export again"
        ) from err
    module = ExplainerModule(**config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())  # whole: the mismatching key may come late
        raise ValueError(
            f"{weights_path} does not match the network described by {config_path}: {detail}; "
            f"were the two files exported together?"
        ) from err
    return module.to(map_location).eval()


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    """``python -m lit_xai.algorithms.vit_shapley.export CHECKPOINT OUTPUT``."""
    parser = argparse.ArgumentParser(
        description="Export an ExplainerModule checkpoint to safetensors + JSON."
    )
    parser.add_argument("checkpoint", help="an explainer checkpoint written by train.py (read weights-only)")
    parser.add_argument("output", help="common name of the two files, e.g. exported/digits_explainer")
    args = parser.parse_args(argv)
    from lit_xai.callbacks.class_names import checkpoint_class_names
    from lit_xai.checkpoint_identity import load_stage, require_stage

    checkpoint = require_stage(args.checkpoint, ExplainerModule, hint="train one with explainer.yaml")
    module = load_stage(ExplainerModule, checkpoint, name=args.checkpoint)
    paths = export_explainer(module, args.output, checkpoint_class_names(checkpoint))
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths


if __name__ == "__main__":
    from lit_xai.cli import user_errors_exit

    with user_errors_exit():
        main()
