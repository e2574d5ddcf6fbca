"""Class names instead of indices (issue 14, item 5): from the data module into checkpoints and captions."""

from __future__ import annotations

import lightning as L
import torch

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.callbacks.attribution_logger import AttributionLogger
from lit_xai.callbacks.class_names import ClassNamesInCheckpoint, checkpoint_class_names
from lit_xai.cli import LitXaiCLI
from lit_xai.data import ShapesDataModule
from lit_xai.io import safe_torch_load


def test_checkpoints_carry_the_class_names_and_still_load(tmp_path):
    data = ShapesDataModule(
        image_size=12, num_train=8, num_val=4, num_test=4, batch_size=4, num_classes=3, grid=2, min_size=4
    )
    module = ClassifierModule("cnn", 3, {"in_chans": 3})
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ClassNamesInCheckpoint()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    saved = safe_torch_load(tmp_path / "model.ckpt")
    assert checkpoint_class_names(tmp_path / "model.ckpt") == ["square", "circle", "triangle"]
    # Not among the settings that LightningCLI hands back to __init__ when a run resumes.
    assert "class_names" not in saved["hyper_parameters"] and "class_names" not in module.hparams
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert loaded.hparams.num_classes == 3


def test_train_py_adds_the_callback_to_every_run(tmp_path):
    model = [
        "--model",
        "lit_xai.algorithms.classifier.ClassifierModule",
        "--model.backbone_kwargs",
        "{in_chans: 1}",
    ]
    cli = LitXaiCLI(args=[*model, "--data", "lit_xai.data.DigitsDataModule"], run=False)
    assert any(isinstance(c, ClassNamesInCheckpoint) for c in cli.trainer.callbacks)


def test_captions_name_the_classes():
    probabilities = torch.tensor([[0.1, 0.9], [0.7, 0.3]])
    captions = AttributionLogger._captions(None, torch.tensor([0, 0]), probabilities, ["cat", "dog"])
    assert captions == ["pred dog (0.90) / true cat", "pred cat (0.70) / true cat"]
