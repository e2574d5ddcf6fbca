"""Classifiers trained anywhere: a lit_xai checkpoint, a timm model name with a weights file, or a factory function.

captum, shap and Quantus all take a plain ``nn.Module``; so does ``evaluate.py`` (``model:`` in its config). A
model trained outside lit_xai comes as

- ``checkpoint``: a checkpoint written by ``train.py`` (any stage; the network it trained);
- ``timm`` + ``weights``: a timm architecture name and its weights (a state dict, a Lightning checkpoint or a
  ``.safetensors`` file, read without running code), with ``num_classes`` and any timm options (``img_size``, ...);
- ``factory`` (+ ``weights``): ``"package.module:function"``, called with ``kwargs`` (and ``num_classes`` when
  given), which must return an ``nn.Module``; the code is the user's own, named explicitly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lit_xai.models.factory import backbone_from_checkpoint, build_model, load_state_dict, load_weights

__all__ = ["ClassifierSpec", "import_factory", "load_classifier_spec"]


@dataclass
class ClassifierSpec:
    """Where a classifier comes from (exactly one of ``checkpoint``, ``timm``, ``factory``).

    Args:
        checkpoint: a ``train.py`` checkpoint.
        timm: a timm model name (``timm.list_models()``).
        factory: ``"package.module:function"`` returning an ``nn.Module``.
        weights: weights to load into the ``timm`` or ``factory`` model (state dict, checkpoint or safetensors).
        num_classes: outputs of the ``timm`` model (passed to the factory too when set).
        kwargs: options of the timm model (``img_size``, ``patch_size``, ``in_chans``, ...) or of the factory.
        patch_size: player size in pixels (default: a ViT's own patches; required for other image models).
        image_size: image size in pixels (default: a ViT's own; required for other image models).
        num_features: number of columns, for tabular models (one player each).
        masker: how missing players are realised: ``auto`` (token dropping for ViTs, zero filling otherwise) or a
            :func:`lit_xai.masking.build_masker` name.
        masker_kwargs: options of the masker.
    """

    checkpoint: str | None = None
    timm: str | None = None
    factory: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    patch_size: int | None = None
    image_size: int | None = None
    num_features: int | None = None
    masker: str = "auto"
    masker_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise one clear ``ValueError`` for a spec that names no model, or two, or lacks what its kind needs."""
        kinds = [k for k in ("checkpoint", "timm", "factory") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                f"model: give exactly one of checkpoint, timm (+ weights, num_classes) or factory "
                f"('package.module:function'); got {', '.join(kinds) or 'none'}"
            )
        if self.timm and self.num_classes is None:
            raise ValueError(
                f"model: timm {self.timm!r} needs num_classes (the outputs its weights were trained for)"
            )
        if self.checkpoint and (self.weights or self.kwargs):
            raise ValueError("model: a checkpoint rebuilds its own network; drop weights and kwargs")
        if self.factory and ":" not in self.factory:
            raise ValueError(f"model: factory must read 'package.module:function', got {self.factory!r}")


def import_factory(path: str, what: str = "model: factory"):
    """The callable named by ``"package.module:function"`` (a dotted attribute path after the colon works too);
    ``what`` names the setting in error messages."""
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{what} must read 'package.module:function', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what}: cannot import {path!r}: {err}") from err
    if not callable(target):
        raise ValueError(f"{what} {path!r} is not callable")
    return target


def load_classifier_spec(spec: ClassifierSpec) -> nn.Module:
    """The network ``spec`` describes, with its weights, in eval mode.

    Example:
        >>> spec = ClassifierSpec(factory="lit_xai.models:build_model", kwargs={"name": "cnn", "in_chans": 1},
        ...                       num_classes=3)
        >>> type(load_classifier_spec(spec)).__name__
        'SmallCNN'
    """
    spec.check()
    if spec.checkpoint:
        model, _ = backbone_from_checkpoint(spec.checkpoint)
        return model.eval()
    if spec.timm:
        model = build_model(spec.timm, spec.num_classes, **spec.kwargs)
    else:
        kwargs = dict(spec.kwargs)
        if spec.num_classes is not None:
            kwargs.setdefault("num_classes", spec.num_classes)
        model = import_factory(spec.factory)(**kwargs)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model: factory {spec.factory!r} returned {type(model).__name__}, not an nn.Module"
            )
    if spec.weights:
        load_weights(model, load_state_dict(spec.weights), f"model: {spec.weights} does not match the model")
    return model.eval()
