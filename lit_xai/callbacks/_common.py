"""What the explanation callbacks share besides the explainer itself: argument checks, the fixed validation
subset, and :class:`ExplanationCallback`, the base that ties them to the explainers of :mod:`._explain`.

The inputs are a subset of the validation set drawn once with a seeded generator, the same in every epoch and on
every process. Everything that can be wrong with a callback's configuration is checked in its constructor (what
needs no model) or its ``setup`` (which also explains two validation inputs as a dry run), before any training
step runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, default_collate

from lit_xai.attribution import ATTRIBUTIONS
from lit_xai.callbacks._explain import (
    SELF_METHODS,
    ExplainSetup,
    check_target_available,
    dry_run,
    resolve_setup,
)

__all__ = [
    "TARGET_MODES",
    "ExplanationCallback",
    "due",
    "check_every_n_epochs",
    "check_method",
    "check_method_kwargs",
    "check_num_samples",
    "check_target_mode",
    "select_validation_subset",
]

#: ``"auto"``: the true class where the data has labels, else the predicted class.
TARGET_MODES = ("auto", "true", "predicted")


def check_method(method: str) -> str:
    """Raise a clear error for an unknown method name (no model needed, so this runs at construction)."""
    if method == "auto" or method in SELF_METHODS or method in ATTRIBUTIONS:
        return method
    raise ValueError(
        f"unknown explanation method {method!r}; choose 'self' (the module's own learned explainer), 'auto' "
        f"(the module's own explainer if it has one, else 'gradient') or a baseline: {', '.join(ATTRIBUTIONS)}"
    )


def check_method_kwargs(methods: list[str], method_kwargs: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """Options per method name, e.g. ``{"integrated_gradients": {"steps": 16}}``; keys must be chosen methods."""
    method_kwargs = dict(method_kwargs or {})
    unknown = sorted(set(method_kwargs) - set(methods))
    if unknown:
        raise ValueError(
            f"method_kwargs has options for {unknown}, which are not among the methods {methods}; key the options "
            f'by method name, e.g. method_kwargs={{"integrated_gradients": {{"steps": 16}}}}'
        )
    return {name: dict(options or {}) for name, options in method_kwargs.items()}


def check_target_mode(target: str) -> str:
    if target not in TARGET_MODES:
        raise ValueError(f"target must be one of {TARGET_MODES}, got {target!r}")
    return target


def check_every_n_epochs(every_n_epochs: int) -> int:
    if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
        raise ValueError(f"every_n_epochs must be a positive int, got {every_n_epochs!r}")
    return every_n_epochs


def due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether this validation epoch is one to explain: never in the sanity check, every n-th epoch when fitting,
    always in ``trainer.validate``."""
    if trainer.sanity_checking:
        return False
    if trainer.state.fn == TrainerFn.VALIDATING:
        return True
    return (trainer.current_epoch + 1) % every_n_epochs == 0


def check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    return num_samples


# ----------------------------------------------------------------------------------------------------------------
# The fixed validation subset
# ----------------------------------------------------------------------------------------------------------------


def _validation_loader(trainer: L.Trainer, stage: str) -> DataLoader:
    """The validation DataLoader of the run, whether it comes from a DataModule or from ``fit(val_dataloaders=)``."""
    datamodule = trainer.datamodule
    if datamodule is not None:
        loader = datamodule.val_dataloader()
    else:
        # Lightning keeps dataloaders passed to fit/validate in the loops' data sources (no public accessor).
        loop = trainer.validate_loop if stage == "validate" else trainer.fit_loop.epoch_loop.val_loop
        source = getattr(loop, "_data_source", None)
        loader = source.dataloader() if source is not None and source.is_defined() else None
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__len__"):
        raise ValueError(
            "the explanation callbacks draw their inputs from the validation set, but this run has no validation "
            "DataLoader over a sized dataset; use a lit_xai DataModule or pass val_dataloaders=DataLoader(...)"
        )
    return loader


def select_validation_subset(
    trainer: L.Trainer, num_samples: int, seed: int, stage: str, owner: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """Draw ``num_samples`` validation items once (all of them, with a warning, if there are fewer):
    ``(dataset indices, collated batch on the CPU)``.

    The draw depends only on ``seed`` and the dataset's length, so every epoch and every DDP process sees the
    same inputs (processes then split them among themselves where work is shared).
    """
    loader = _validation_loader(trainer, stage)
    size = len(loader.dataset)
    if num_samples > size:
        # A config's num_samples is sized for its usual data; on a small validation set use all of it rather
        # than refuse to train (the option is buried in the config's callback list).
        rank_zero_warn(
            f"{owner}(num_samples={num_samples}) asks for more inputs than the validation set has ({size}); "
            f"using all {size}"
        )
        num_samples = size
    generator = torch.Generator().manual_seed(int(seed))
    indices = torch.randperm(size, generator=generator)[:num_samples].sort().values
    collate = loader.collate_fn or default_collate
    batch = collate([loader.dataset[int(i)] for i in indices])
    if not isinstance(batch, Mapping) or "input" not in batch:
        raise ValueError(
            f"{owner} needs dict batches with an 'input' entry (and 'target', 'annotation' where available), as "
            f"the lit_xai DataModules give; got {type(batch).__name__}"
        )
    batch = {key: value for key, value in batch.items() if isinstance(value, Tensor)}
    return indices, batch


# ----------------------------------------------------------------------------------------------------------------
# The base of both callbacks
# ----------------------------------------------------------------------------------------------------------------


class ExplanationCallback(Callback):
    """The set-up both explanation callbacks share: explain a fixed validation subset with one or more methods.

    Subclasses check and store their arguments in their constructors (they document them); :meth:`_prepare` reads
    the attributes annotated here and sets ``indices`` and ``batch``.
    """

    num_samples: int
    seed: int
    target: str
    method_kwargs: dict[str, dict]
    patch_size: int | list[int] | None
    masker: str | None
    masker_kwargs: dict[str, Any]
    network: str | None
    indices: Tensor | None
    batch: dict[str, Tensor] | None

    def _prepare(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, methods: Sequence[str]
    ) -> list[ExplainSetup]:
        """Draw the validation subset (``self.indices``, ``self.batch``) and build one explainer per method.

        Every rank runs this from ``setup``, so a configuration mistake stops all processes together: the
        explainers are checked against the data's labels and run once on two inputs before training starts.
        """
        owner = type(self).__name__
        self.indices, self.batch = select_validation_subset(
            trainer, self.num_samples, self.seed, stage, owner
        )
        self.num_samples = len(self.indices)  # fewer where the validation set is smaller
        setups = [
            resolve_setup(
                pl_module,
                name,
                self.batch["input"],
                self.method_kwargs.get(name),
                self.patch_size,
                self.masker,
                self.masker_kwargs,
                self.network,
            )
            for name in methods
        ]
        resolved = [setup.method for setup in setups]
        if len(set(resolved)) != len(resolved):  # e.g. "auto" and "self" on a module with its own explainer
            raise ValueError(
                f"methods {list(methods)} name the same explainer twice ({resolved}); list each once"
            )
        check_target_available(self.target, self.batch, setups, owner)
        dry_run(pl_module, setups, self.batch, self.target, owner)
        return setups
