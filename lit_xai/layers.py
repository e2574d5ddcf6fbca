"""Hidden layers: find one by name, read its output, stop a forward pass there.

The one place where the toolkit looks up a layer of a model (a timm CNN stage, a ViT block or one of its modules,
a layer of our small CNN) and hooks it. Information bottleneck attribution (:mod:`lit_xai.algorithms.input_iba`),
channel masking (:mod:`lit_xai.channel_masking`) and the methods built on it use these helpers, so a layer name
means the same thing, and a wrong name gets the same helpful error, everywhere. No Lightning here: this is part of
the removal core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

__all__ = ["forward_to_layer", "layer_output", "resolve_layer"]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (as in ``model.named_modules()``), or explain what exists."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    shown = ", ".join(names[:60]) + (f", ... ({len(names) - 60} more)" if len(names) > 60 else "")
    raise ValueError(f"the model has no layer named {name!r}; its layers are: {shown}")


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


@contextmanager
def layer_output(layer: nn.Module, stop: bool = False) -> Iterator[dict[str, Tensor]]:
    """Capture the output of ``layer`` during forward passes inside the block.

    Yields a dict whose ``"output"`` entry holds the latest output. With ``stop=True`` the forward pass ends at
    the layer (the exception is swallowed at the end of the block, so use one forward per block).
    """
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, args, output):
        if not isinstance(output, Tensor):
            raise ValueError(
                f"the layer {type(module).__name__} returns {type(output).__name__}, not a tensor; "
                f"choose a layer whose output is a single feature tensor"
            )
        captured["output"] = output
        if stop:
            raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    except _StopForward:
        pass
    finally:
        handle.remove()


def forward_to_layer(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """Run ``model`` on ``x`` only as far as ``layer`` and return that layer's output."""
    with layer_output(layer, stop=True) as captured:
        model(x)
    if "output" not in captured:
        raise ValueError("the chosen layer was not called in the model's forward pass; choose another layer")
    return captured["output"]
