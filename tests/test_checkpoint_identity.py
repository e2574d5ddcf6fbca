"""Every checkpoint names the stage that wrote it, and one function checks it (lit_xai/checkpoint_identity.py)."""

import importlib
import inspect
import pkgutil

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_xai.algorithms
from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.checkpoint_identity import (
    FORMAT_VERSION,
    STAGE_KEY,
    RecordsStage,
    checkpoint_identity,
    load_stage,
    require_stage,
)


def _lightning_modules() -> list[type]:
    found = set()
    for info in pkgutil.walk_packages(lit_xai.algorithms.__path__, "lit_xai.algorithms."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, L.LightningModule) and cls.__module__.startswith("lit_xai."):
                found.add(cls)
    return sorted(found, key=lambda cls: cls.__qualname__)


def test_every_training_stage_records_itself():
    stages = _lightning_modules()
    assert (
        len(stages) >= 7
    )  # classifier, surrogate, explainer, the two DFS stages, saliency-guided, VisFIS ...
    assert [cls.__name__ for cls in stages if not issubclass(cls, RecordsStage)] == []
    # A stage with its own save hook must keep the record: it calls the mixin's hook first.
    for cls in stages:
        if "on_save_checkpoint" in vars(cls):
            assert "super().on_save_checkpoint(checkpoint)" in inspect.getsource(cls.on_save_checkpoint), cls


class TunedClassifier(ClassifierModule):
    """A user's variant of a stage: its checkpoints serve where a ClassifierModule's do."""


def _tiny_classifier(cls=ClassifierModule) -> L.LightningModule:
    return cls("mlp", 3, {"in_features": 4, "hidden": [8]})


def _trained_without_cli(tmp_path, module: L.LightningModule) -> str:
    """Train with a plain Trainer (no LightningCLI, so no ``_class_path``) and save as Lightning does."""
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    loader = DataLoader(data, batch_size=4, collate_fn=lambda rows: {
        "input": torch.stack([r[0] for r in rows]), "target": torch.stack([r[1] for r in rows])})  # fmt: skip
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, loader)
    path = str(tmp_path / "plain.ckpt")
    trainer.save_checkpoint(path)
    return path


def test_a_module_trained_without_the_cli_names_its_stage(tmp_path):
    path = _trained_without_cli(tmp_path, _tiny_classifier())
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint[STAGE_KEY] == {
        "class_path": "lit_xai.algorithms.components.classifier.ClassifierModule",
        "format": FORMAT_VERSION,
    }
    assert "_class_path" not in checkpoint["hyper_parameters"]
    identity = checkpoint_identity(path)
    assert (identity.source, identity.resolve()) == ("record", ClassifierModule)
    assert require_stage(checkpoint, ClassifierModule) is checkpoint  # the dict passes through, not re-read
    with pytest.raises(ValueError, match=r"plain.ckpt was written by ClassifierModule, but SurrogateModule or "
                                         r"ExplainerModule is needed here: train it first"):  # fmt: skip
        require_stage(path, (SurrogateModule, ExplainerModule), hint="train it first")
    # A subclass's checkpoint serves where the base class is expected, but resuming needs the same class.
    masked = torch.load(_trained_without_cli(tmp_path, _tiny_classifier(TunedClassifier)), weights_only=True)
    require_stage(masked, ClassifierModule)
    with pytest.raises(ValueError, match="written by TunedClassifier, but ClassifierModule is needed"):
        require_stage(masked, ClassifierModule, exact=True)
    restored = load_stage(ClassifierModule, checkpoint)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key])


def _legacy(hparams: dict) -> dict:
    return {"state_dict": {}, "hyper_parameters": hparams}


def test_checkpoints_from_before_the_record_still_load_through_the_one_fallback():
    cli = checkpoint_identity(
        _legacy({"_class_path": "lit_xai.algorithms.classifier.ClassifierModule", "lr": 1})
    )
    assert (cli.source, cli.resolve()) == (
        "lightning_cli",
        ClassifierModule,
    )  # an alias resolves to the class
    explainer = checkpoint_identity(_legacy({"surrogate_spec": {}, "num_masks": 32}))
    assert (explainer.source, explainer.resolve()) == ("hyperparameters", ExplainerModule)
    surrogate = checkpoint_identity(_legacy({"masks_per_image": 1}))
    assert (surrogate.source, surrogate.resolve()) == ("hyperparameters", SurrogateModule)
    require_stage(_legacy({"masks_per_image": 1}), SurrogateModule)
    unknown = _legacy({"lr": 1e-3})
    assert checkpoint_identity(unknown).source == "unknown"
    with pytest.raises(
        ValueError, match="old.ckpt does not say which stage wrote it .* not a SurrogateModule"
    ):
        require_stage(unknown, SurrogateModule, name="old.ckpt")
    assert require_stage(unknown, SurrogateModule, allow_unknown=True) is unknown


def test_a_record_from_the_future_or_a_broken_one_is_refused():
    newer = {STAGE_KEY: {"class_path": "lit_xai.x.Y", "format": FORMAT_VERSION + 1}}
    with pytest.raises(ValueError, match=f"newer lit_xai .*format {FORMAT_VERSION + 1}"):
        checkpoint_identity(newer)
    with pytest.raises(ValueError, match="malformed"):
        checkpoint_identity({STAGE_KEY: "ClassifierModule"})
    # A class that cannot be imported (renamed since) is compared by its recorded path.
    gone = {STAGE_KEY: {"class_path": "lit_xai.gone.OldStage", "format": 1}}
    with pytest.raises(ValueError, match="written by OldStage, but ClassifierModule is needed"):
        require_stage(gone, ClassifierModule)
