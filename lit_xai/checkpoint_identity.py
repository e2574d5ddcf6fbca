"""Which stage wrote a checkpoint: recorded when it is saved, checked in one place when it is read.

Every LightningModule of lit_xai inherits :class:`RecordsStage`, whose ``on_save_checkpoint`` hook writes

    checkpoint["lit_xai_stage"] = {"class_path": "lit_xai.algorithms.<room>.lightning_model.<Module>", "format": 1}

into every checkpoint it saves, however it is trained (``train.py``, a plain ``Trainer``, a user's script).
:func:`checkpoint_identity` reads that record, and :func:`require_stage` is the one check that a checkpoint was
written by the stage a caller needs (``--ckpt_path`` of ``train.py``, the surrogate an explainer explains, the
explainers and surrogate of an evaluation, the exporter). Callers read a file once and pass the dict on:
:func:`load_stage` builds the module from that same dict.

Checkpoints written before the record existed fall back to what they do hold: the class path LightningCLI puts in
the hyperparameters (``_class_path``), else the hyperparameters only one stage has (``surrogate_spec`` and
``num_masks``: the ViT Shapley explainer; ``masks_per_image``: its surrogate).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_xai.models.factory import read_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "STAGE_KEY",
    "RecordsStage",
    "StageIdentity",
    "checkpoint_identity",
    "import_class_path",
    "load_stage",
    "require_stage",
]

#: The checkpoint entry that names the stage.
STAGE_KEY = "lit_xai_stage"
#: Version of that entry's layout; a reader refuses records newer than it knows.
FORMAT_VERSION = 1

_EXPLAINER = "lit_xai.algorithms.vit_shapley.lightning_model.ExplainerModule"
_SURROGATE = "lit_xai.algorithms.vit_shapley.lightning_model.SurrogateModule"


def class_path(cls: type) -> str:
    """``module.QualifiedName`` of a class: what the record stores and what LightningCLI's ``class_path`` means."""
    return f"{cls.__module__}.{cls.__qualname__}"


class RecordsStage:
    """Mixin for LightningModules: every checkpoint they save names their class and the record's format.

    List it before ``L.LightningModule`` (``class MyStage(RecordsStage, L.LightningModule)``); a subclass that
    overrides ``on_save_checkpoint`` calls ``super().on_save_checkpoint(checkpoint)``.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STAGE_KEY] = {"class_path": class_path(type(self)), "format": FORMAT_VERSION}
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]


@dataclass(frozen=True)
class StageIdentity:
    """The stage that wrote a checkpoint.

    Attributes:
        class_path: the LightningModule's class path, or ``None`` when the checkpoint does not say.
        format: the record's format version (``None`` for checkpoints from before the record).
        source: how it is known: ``"record"``, ``"lightning_cli"`` (``_class_path`` in the hyperparameters),
            ``"hyperparameters"`` (keys only one stage has) or ``"unknown"``.
    """

    class_path: str | None
    format: int | None
    source: str

    @property
    def name(self) -> str:
        """The class's name, for messages."""
        return self.class_path.rsplit(".", 1)[-1] if self.class_path else "an unknown stage"

    def resolve(self) -> type | None:
        """The class itself, or ``None`` when it cannot be imported (renamed, or from another package version)."""
        return import_class_path(self.class_path) if self.class_path else None


def import_class_path(path: str) -> type | None:
    """The class a dotted path names (``package.module.Class``; an alias such as ``lit_xai.algorithms.classifier.
    ClassifierModule`` gives the same class), or ``None`` when it cannot be imported."""
    for split in range(
        path.count("."), 0, -1
    ):  # the longest importable module, then attributes (nested classes)
        parts = path.split(".")
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except (ImportError, ValueError):
            continue
        try:
            for part in parts[split:]:
                found = getattr(found, part)
        except AttributeError:
            return None
        return found if isinstance(found, type) else None
    return None


def _read(checkpoint: str | Path | dict) -> dict:
    if isinstance(checkpoint, dict):
        return checkpoint
    loaded = read_checkpoint(checkpoint)
    if not isinstance(loaded, dict):
        raise ValueError(f"{checkpoint} holds a {type(loaded).__name__}, not a checkpoint")
    return loaded


def checkpoint_identity(checkpoint: str | Path | dict) -> StageIdentity:
    """The stage that wrote ``checkpoint`` (a path, read weights-only, or a dict already read).

    Raises:
        ValueError: the record is malformed or newer than this lit_xai reads.
    """
    checkpoint = _read(checkpoint)
    record = checkpoint.get(STAGE_KEY)
    if record is not None:
        if not isinstance(record, dict) or not isinstance(record.get("class_path"), str):
            raise ValueError(f"the checkpoint's {STAGE_KEY!r} entry is malformed: {record!r}")
        version = int(record.get("format", 0))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"the checkpoint was written by a newer lit_xai (stage record format {version}; this one reads up "
                f"to {FORMAT_VERSION}): upgrade lit_xai to load it"
            )
        return StageIdentity(record["class_path"], version, "record")
    # Written before the record existed: the one fallback, the hints such checkpoints do carry.
    hparams = checkpoint.get("hyper_parameters") or {}
    if isinstance(hparams.get("_class_path"), str):
        return StageIdentity(hparams["_class_path"], None, "lightning_cli")
    if "surrogate_spec" in hparams and "num_masks" in hparams:
        return StageIdentity(_EXPLAINER, None, "hyperparameters")
    if "masks_per_image" in hparams:
        return StageIdentity(_SURROGATE, None, "hyperparameters")
    return StageIdentity(None, None, "unknown")


def _matches(identity: StageIdentity, expected: tuple[type, ...], exact: bool) -> bool:
    found = identity.resolve()
    if found is None:  # cannot import it: compare the names the two record
        return identity.class_path in {class_path(cls) for cls in expected}
    return any(found is cls if exact else issubclass(found, cls) for cls in expected)


def require_stage(
    checkpoint: str | Path | dict,
    expected: type | tuple[type, ...],
    *,
    name: str | None = None,
    hint: str = "",
    exact: bool = False,
    allow_unknown: bool = False,
) -> dict:
    """Check that ``checkpoint`` was written by ``expected`` (or a subclass) and return it, read once.

    Args:
        checkpoint: a path (read weights-only) or a checkpoint dict already read.
        expected: the LightningModule class(es) accepted.
        name: how the messages call the checkpoint (default: its path).
        hint: the fix, appended to the error (e.g. ``"train one with configs/<dataset>/surrogate.yaml"``).
        exact: accept only ``expected`` itself, not subclasses (resuming needs the same class).
        allow_unknown: let a checkpoint that names no stage through (resuming an old one: Lightning checks it).

    Returns:
        The checkpoint dict, to pass on (e.g. to :func:`load_stage`).

    Raises:
        ValueError: naming the stage found and the one expected.
    """
    expected = expected if isinstance(expected, tuple) else (expected,)
    label = name or str(checkpoint)
    checkpoint = _read(checkpoint)
    identity = checkpoint_identity(checkpoint)
    wanted = " or ".join(cls.__name__ for cls in expected)
    fix = f": {hint}" if hint else ""
    if identity.class_path is None:
        if allow_unknown:
            return checkpoint
        raise ValueError(
            f"{label} does not say which stage wrote it (no {STAGE_KEY!r} record, no LightningCLI class path) and "
            f"is not a {wanted} checkpoint{fix}"
        )
    if not _matches(identity, expected, exact):
        raise ValueError(f"{label} was written by {identity.name}, but {wanted} is needed here{fix}")
    return checkpoint


def load_stage(cls: type, checkpoint: str | Path | dict, *, name: str | None = None, hint: str = "") -> Any:
    """Build a ``cls`` LightningModule from its checkpoint, read once (what ``cls.load_from_checkpoint`` does).

    The stage is checked with :func:`require_stage`; the module is built from the saved hyperparameters, given its
    ``on_load_checkpoint`` hook and the saved weights (strictly: every key must match).
    """
    checkpoint = require_stage(checkpoint, cls, name=name, hint=hint)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        hparams = {key: value for key, value in hparams.items() if key in parameters}
    module = cls(**hparams)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module
