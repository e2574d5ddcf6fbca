"""Build any backbone by name: our small models or any timm model, optionally from a local checkpoint."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from lit_xai.io import describe_error, safe_torch_load
from lit_xai.models.small import MLP, SmallCNN

__all__ = [
    "build_model",
    "load_state_dict",
    "read_checkpoint",
    "backbone_from_checkpoint",
    "backbone_from_weights",
    "SMALL_MODELS",
]

SMALL_MODELS = {"mlp": MLP, "cnn": SmallCNN}


def read_checkpoint(path: str | Path) -> dict:
    """Read a Lightning checkpoint or state dict with ``weights_only=True``: a checkpoint never runs code.

    Loads through :func:`lit_xai.io.safe_torch_load` (so a missing file raises the same ``FileNotFoundError``) and
    names the underlying failure of a file that cannot be loaded safely.
    """
    path = Path(path)
    try:
        return safe_torch_load(path)
    except ValueError as err:
        cause = err.__cause__ or err  # the torch.load failure: unpickling refused, truncated file, ...
        raise ValueError(
            f"could not load {path} safely (weights only): {describe_error(cause).rstrip('.')}. "
            f"lit_xai never unpickles arbitrary objects; re-save the weights as a state dict or safetensors"
        ) from cause


def load_state_dict(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Load weights from a ``.safetensors``, a plain state dict, or a Lightning checkpoint — never running code.

    Args:
        path: the file.
        prefix: for Lightning checkpoints, the attribute holding the network (e.g. ``"model."``); keys under it
            are returned with the prefix stripped. ``None`` strips ``"model."`` when every key has it.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = read_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    if prefix is None and state and all(k.startswith("model.") for k in state):
        prefix = "model."
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def build_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Create a backbone.

    Args:
        name: ``"mlp"`` or ``"cnn"`` (our small models; ``in_features``/``in_chans`` in ``kwargs``), or any timm
            model name (``timm.list_models()``), e.g. ``"vit_small_patch16_224"``; timm options such as
            ``img_size``, ``patch_size``, ``in_chans``, ``depth`` go in ``kwargs``.
        num_classes: number of outputs.
        pretrained: load timm's pretrained weights (needs the weights cached or a network).
        checkpoint_path: a local state dict, Lightning checkpoint or safetensors file to load (weights only).

    Example:
        >>> import torch
        >>> cnn = build_model("cnn", 3, in_chans=1)  # small enough for a CPU, no download
        >>> cnn(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 3])
        >>> vit = build_model("vit_tiny_patch16_224", 3, img_size=8, patch_size=4, in_chans=1, depth=1)
        >>> vit(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """
    if name in SMALL_MODELS:
        if pretrained:
            raise ValueError(f"there are no pretrained weights for {name!r}; use checkpoint_path instead")
        model = SMALL_MODELS[name](num_classes=num_classes, **kwargs)
    else:
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ValueError(
                f"unknown model {name!r}: not 'mlp', 'cnn' or a timm model name (similar: {close})"
            )
        if pretrained:
            model = _create_pretrained(name, num_classes, **kwargs)
        else:
            model = timm.create_model(name, num_classes=num_classes, **kwargs)
    if checkpoint_path is not None:
        load_weights(model, load_state_dict(checkpoint_path), f"{checkpoint_path} does not match {name!r}")
    return model


#: Files timm reads pretrained weights from on the Hugging Face Hub, in the order it tries them.
_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _offline_hint(name: str) -> str:
    return (
        f"pretrained weights of {name!r} are not in the local Hugging Face cache and cannot be downloaded (no "
        f"network?): set --model.init_args.pretrained false to start from random weights, or "
        f"--model.init_args.checkpoint_path to a local state dict or .safetensors file"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers at all; ``True`` behind a proxy, which only the HTTP client can use."""
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _create_pretrained(name: str, num_classes: int, **kwargs) -> nn.Module:
    """``timm.create_model(pretrained=True)``, failing in seconds with the fix when the weights cannot be had.

    Offline, the Hub client retries for about a minute and then raises an error that suggests neither
    ``pretrained: false`` nor a local ``checkpoint_path``. Weights already in the cache are used without a
    network; otherwise the Hub's host is tried once, briefly, before timm's download.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = (getattr(cfg, "hf_hub_id", None) or "").split("@")[0]
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in _HUB_WEIGHT_FILES)
        if not cached and (constants.HF_HUB_OFFLINE or not _hub_reachable()):
            raise FileNotFoundError(_offline_hint(name))
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except (OSError, ConnectionError, TimeoutError) as err:  # the Hub's "not found in the local cache" errors
        raise FileNotFoundError(f"{_offline_hint(name)} ({type(err).__name__}: {str(err)[:200]})") from err


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], mismatch: str) -> None:
    """Load ``state`` into ``model`` strictly, turning any mismatch into one clear ``ValueError``."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ValueError(f"{mismatch}: {lines[-1]}; was it saved from another model or stage?") from err
    if missing or unexpected or not state:
        raise ValueError(
            f"{mismatch}: missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}; "
            f"was it saved from another model or stage?"
        )


def backbone_from_weights(
    path: str | Path, backbone: str, num_classes: int, backbone_kwargs: dict | None = None
) -> tuple[nn.Module, dict]:
    """A network trained outside lit_xai: build ``backbone`` and load the weights at ``path`` (a state dict,
    a Lightning checkpoint or ``.safetensors``, read without running code).

    Returns:
        ``(model, spec)`` with the same ``spec`` as :func:`backbone_from_checkpoint`, so later stages store it and
        rebuild the network from their own checkpoints.
    """
    spec = {
        "backbone": backbone,
        "num_classes": int(num_classes),
        "backbone_kwargs": dict(backbone_kwargs or {}),
    }
    model = build_model(spec["backbone"], spec["num_classes"], **spec["backbone_kwargs"])
    load_weights(model, load_state_dict(path), f"{path} does not hold {backbone!r} weights")
    return model, spec


def backbone_from_checkpoint(
    path: str | Path | dict, prefix: str = "model.", name: str | Path | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the network a lit_xai stage trained, from its Lightning checkpoint.

    Every stage stores ``backbone_spec`` (``backbone``, ``num_classes``, ``backbone_kwargs``) in its
    hyperparameters, so the checkpoint alone is enough to rebuild the network.

    Args:
        path: the checkpoint file, or its dict when the caller has read it already (files are read once).
        prefix: the attribute that holds the network in the LightningModule.
        name: how messages call a checkpoint passed as a dict (its path).

    Returns:
        ``(model, spec)``, the model with the weights under ``prefix`` loaded.
    """
    if isinstance(path, dict):
        checkpoint, path = path, name or "the checkpoint"
    else:
        checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    spec = hparams.get("backbone_spec") or {
        key: hparams.get(key) for key in ("backbone", "num_classes", "backbone_kwargs")
    }
    if not spec.get("backbone") or not spec.get("num_classes"):
        raise ValueError(
            f"{path} is not a lit_xai checkpoint (no backbone/num_classes in its hyperparameters); "
            f"pass a checkpoint written by train.py"
        )
    spec = {
        "backbone": spec["backbone"],
        "num_classes": int(spec["num_classes"]),
        "backbone_kwargs": dict(spec.get("backbone_kwargs") or {}),
    }
    model = build_model(spec["backbone"], spec["num_classes"], **spec["backbone_kwargs"])
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    load_weights(model, state, f"{path} does not hold {spec['backbone']!r} weights under {prefix!r}")
    return model, spec
