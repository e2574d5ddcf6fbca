"""Explanation callbacks: images reach W&B / TensorBoard / PNG files, quality metrics are exact, monitorable and
DDP-correct, the model is left as found, and bad configurations fail at setup."""

from __future__ import annotations

import glob
import json
import struct
import time
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from torch.utils.data import DataLoader, Dataset

from lit_xai.algorithms.classifier import ClassifierModule
from lit_xai.algorithms.dynamic_selection import MaskedPredictorModule
from lit_xai.algorithms.vit_shapley import ExplainerModule, SurrogateModule
from lit_xai.attribution import build_attribution
from lit_xai.callbacks import AttributionLogger, ExplanationQuality
from lit_xai.data.base import TensorDictDataset
from lit_xai.masking import BaselineFill
from lit_xai.metrics.functional import completeness_soundness, insertion_deletion, localization
from lit_xai.players import PatchGrid
from lit_xai.shapley import shapley_values

CNN = dict(in_chans=1, channels=(4, 8, 8))
TINY_VIT = dict(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)  # 4 players


class Unlabeled(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input": self.x[i]}


class TinyImages(L.LightningDataModule):
    """8x8 one-channel images in 3 classes; optional annotations; the validation set has ``n_val`` images."""

    def __init__(self, n_val=12, labels=True, annotations=False, batch_size=8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(24 + n_val, 1, 8, 8, generator=g)
        y = torch.bucketize(x[:, 0, :4, :4].mean((1, 2)), torch.tensor([-0.2, 0.2]))
        mask = torch.zeros(len(x), 8, 8)
        mask[:, :4, :4] = 1.0  # the region that decides the label
        self.batch_size = batch_size
        if labels:
            self.train_set = TensorDictDataset(x[:24], y[:24], mask[:24] if annotations else None)
            self.val_set = TensorDictDataset(x[24:], y[24:], mask[24:] if annotations else None)
        else:
            self.train_set, self.val_set = Unlabeled(x[:24]), Unlabeled(x[24:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class CountingClassifier(ClassifierModule):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)


def classifier(seed=0, cls=ClassifierModule):
    torch.manual_seed(seed)
    return cls("cnn", 3, CNN, lr=0.01)


def trainer(tmp_path, callbacks, logger=False, epochs=1, **kwargs):
    options = dict(
        max_epochs=epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def _wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file (a LevelDB-style log of protobufs: 32 KiB blocks of CRC'd chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a chunk header: the rest of the block is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            records.append(record)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
    return records


def wandb_history(run_dir: Path, timeout: float = 60.0) -> list[dict]:
    """History rows of an offline W&B run.

    ``wandb.finish()`` can return before W&B's service process has written the end of the file, so this waits for
    the run's final ("exit") record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(next(run_dir.glob("*.wandb")))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = record.history.item  # nested values (images) come with a key path instead of a key
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Loggers
# ----------------------------------------------------------------------------------------------------------------


def test_wandb_offline_run_has_images_and_metrics_and_checkpoint_monitors_them(tmp_path):
    import wandb

    logger = WandbLogger(save_dir=str(tmp_path), project="lit_xai_tests", offline=True)
    images = AttributionLogger(method=["gradient", "leave_one_out"], num_samples=3)
    quality = ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/deletion_auc", mode="min")
    try:
        trainer(tmp_path, [images, quality, checkpoint], logger=logger, epochs=2).fit(
            classifier(), TinyImages()
        )
    finally:
        wandb.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files/media/images/explanations"
    assert len(list(media.glob("gradient_*.png"))) == 2 * 3  # two epochs of three panels
    assert len(list(media.glob("leave_one_out_*.png"))) == 2 * 3

    history = wandb_history(run)
    panels = [row for row in history if "explanations/gradient/count" in row]
    assert len(panels) == 2
    assert all("explanations/leave_one_out/count" in row for row in panels)  # one W&B step per evaluation
    captions = panels[0]["explanations/gradient/captions"]
    assert len(captions) == 3 and all(c.startswith("pred ") and "/ true " in c for c in captions)
    deletion = [row["val/deletion_auc"] for row in history if "val/deletion_auc" in row]
    assert len(deletion) == 2 and all(
        "val/insertion_auc" in row for row in history if "val/deletion_auc" in row
    )
    assert checkpoint.best_model_score.item() == pytest.approx(min(deletion), abs=1e-6)


def test_tensorboard_event_file_holds_image_grids_and_captions(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    callback = AttributionLogger(method="gradcam", num_samples=4)
    trainer(tmp_path, [callback], logger=logger, epochs=2).fit(classifier(), TinyImages())
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "explanations/gradcam" in events.Tags()["images"]
    grids = events.Images("explanations/gradcam")
    assert len(grids) == 2 and grids[0].width > 4 * grids[0].height  # four panels side by side
    assert any(tag.startswith("explanations/gradcam/captions") for tag in events.Tags()["tensors"])


@pytest.mark.parametrize("kind", ["csv", "none"])
def test_csv_logger_or_no_logger_writes_pngs_in_the_log_directory(tmp_path, kind):
    logger = CSVLogger(str(tmp_path), name="csv") if kind == "csv" else False
    callback = AttributionLogger(method="integrated_gradients", num_samples=2, every_n_epochs=2)
    fit = trainer(tmp_path, [callback], logger=logger, epochs=3, limit_val_batches=1)
    fit.fit(classifier(), TinyImages())
    root = Path(logger.log_dir) if kind == "csv" else tmp_path
    files = sorted((root / "explanations/integrated_gradients").glob("*.png"))
    assert [f.name for f in files] == ["epoch=001-step=000006.png"]  # epochs 0 and 2 are skipped
    image = plt.imread(files[0])
    assert image.ndim == 3 and image.shape[0] > 100


def tiny_table():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    data = TinyImages()
    data.train_set = TensorDictDataset(x[:28], (x[:28, 0] > 0).long())
    data.val_set = TensorDictDataset(x[28:], (x[28:, 0] > 0).long())
    data.feature_names = [f"feature_{i}" for i in range(6)]
    return data


def test_tabular_data_gets_feature_bar_charts(tmp_path):
    data = tiny_table()
    module = ClassifierModule("mlp", 2, dict(in_features=6, hidden=(8,)))
    callback = AttributionLogger(method="gradient_x_input", num_samples=2, top_k=4)
    trainer(tmp_path, [callback]).fit(module, data)
    assert callback.feature_names == data.feature_names
    assert type(callback.setups[0].players).__name__ == "FeatureGroups"
    (png,) = (tmp_path / "explanations/gradient_x_input").glob("*.png")
    assert plt.imread(png).shape[1] > 400  # two charts side by side


def test_a_named_network_is_explained_through_its_owners_masker(tmp_path):
    # The predictor of dynamic feature selection sees inputs with the mask appended: only its own masker can run it.
    module = MaskedPredictorModule(
        num_classes=2, num_features=6, predictor="mlp", predictor_kwargs={"hidden": [8]}
    )
    quality = ExplanationQuality(
        ["insertion_deletion"], method="leave_one_out", num_samples=8, network="predictor"
    )
    trainer(tmp_path, [quality]).fit(module, tiny_table())
    assert quality.explain_setup.masker is module.masker
    assert 0.0 <= quality.last_values["val/deletion_auc"] <= 1.0


# ----------------------------------------------------------------------------------------------------------------
# Side effects, sanity check, correctness
# ----------------------------------------------------------------------------------------------------------------


class Snapshot(L.Callback):
    """Puts the model in a mixed train/eval state before the explanation callbacks, and records everything they
    could disturb; a second instance after them records it again."""

    def __init__(self, prepare):
        self.prepare, self.states = prepare, []

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.prepare:
            pl_module.model.features.train()  # some modules in training mode, the rest in eval mode
        self.states.append(
            {
                "modes": [m.training for m in pl_module.modules()],
                "flags": [p.requires_grad for p in pl_module.parameters()],
                "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
                "buffers": [b.clone() for b in pl_module.buffers()],
                "rng": torch.get_rng_state(),
            }
        )


def test_callbacks_leave_modes_flags_statistics_and_rng_as_found(tmp_path):
    module = classifier()
    module.model.stem[0].requires_grad_(False)  # a frozen layer must stay frozen
    before, after = Snapshot(prepare=True), Snapshot(prepare=False)
    callbacks = [
        before,
        AttributionLogger(
            method=["integrated_gradients", "gradcam", "smoothgrad"],
            num_samples=4,
            method_kwargs={"integrated_gradients": {"steps": 8}, "smoothgrad": {"num_samples": 4}},
        ),
        ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=6),
        after,
    ]
    logger = TensorBoardLogger(str(tmp_path))  # images as arrays: no figure drawing in this test
    trainer(tmp_path, callbacks, logger=logger, epochs=2, limit_val_batches=1).fit(module, TinyImages())
    assert len(before.states) == len(after.states) == 2
    for first, second in zip(before.states, after.states):
        assert first["modes"] == second["modes"] and any(first["modes"]) and not all(first["modes"])
        assert first["flags"] == second["flags"] and not all(first["flags"])
        for a, b in zip(first["grads"], second["grads"]):
            assert (a is None and b is None) or torch.equal(a, b)
        assert all(torch.equal(a, b) for a, b in zip(first["buffers"], second["buffers"]))
        assert torch.equal(first["rng"], second["rng"])


class SanityProbe(L.Callback):
    def __init__(self, watched):
        self.watched, self.seen = watched, None

    def on_sanity_check_end(self, trainer, pl_module):
        self.seen = [callback.last_seconds for callback in self.watched]
        self.seen.append(sorted(Path(trainer.default_root_dir).rglob("*.png")))


def test_nothing_is_computed_or_logged_during_the_sanity_check(tmp_path):
    images = AttributionLogger(method="gradient", num_samples=2)
    quality = ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=4)
    probe = SanityProbe([images, quality])
    trainer(tmp_path, [images, quality, probe], num_sanity_val_steps=2).fit(classifier(), TinyImages())
    assert probe.seen == [None, None, []]
    assert images.last_seconds is not None and quality.last_seconds is not None
    (png,) = tmp_path.rglob("*.png")
    assert png.name == "epoch=000-step=000003.png"


def test_quality_equals_metrics_computed_directly_on_the_fixed_subset(tmp_path):
    data = TinyImages(annotations=True)
    quality = ExplanationQuality(
        ["insertion_deletion", "localization"], method="gradient", num_samples=10, batch_size=4, patch_size=2
    )
    fit = trainer(tmp_path, [quality])
    module = classifier()
    fit.fit(module, data)
    again = ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=10)
    other = ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=10, seed=1)
    for callback in (again, other):
        callback.setup(fit, module, "validate")
    assert torch.equal(quality.indices, again.indices) and not torch.equal(quality.indices, other.indices)

    batch = [data.val_set[int(i)] for i in quality.indices]
    x = torch.stack([b["input"] for b in batch])
    y = torch.stack([b["target"] for b in batch])
    annotation = torch.stack([b["annotation"] for b in batch])
    model, players = module.model.eval(), PatchGrid(8, 2)
    values = build_attribution("gradient", model, players).attribute(x, y)
    generator = torch.Generator().manual_seed(0)
    curves = insertion_deletion(model, BaselineFill(players), x, values, y, num_steps=8, generator=generator)
    expected = {f"val/{k}": v.mean() for k, v in curves.items() if k.endswith("auc")}
    expected.update({f"val/{k}": v.mean() for k, v in localization(values, annotation, players).items()})
    assert set(quality.last_values) == set(expected)
    for key, value in expected.items():
        assert quality.last_values[key] == pytest.approx(float(value), abs=1e-5), key
        assert float(fit.callback_metrics[key]) == pytest.approx(float(value), abs=1e-5), key


# ----------------------------------------------------------------------------------------------------------------
# Learned explainer: "self" and ground-truth Shapley values
# ----------------------------------------------------------------------------------------------------------------


def save_module(module, path):
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2",
        },
        path,
    )
    return str(path)


def test_learned_explainer_is_scored_against_cached_exact_shapley_values(tmp_path, monkeypatch):
    torch.manual_seed(0)
    base = ClassifierModule("vit_tiny_patch16_224", 3, TINY_VIT)
    surrogate = SurrogateModule(save_module(base, tmp_path / "classifier.ckpt"))
    explainer = ExplainerModule(save_module(surrogate, tmp_path / "surrogate.ckpt"), num_masks=4)
    cache = tmp_path / "truth.pt"
    quality = ExplanationQuality(["shapley_error"], method="self", num_samples=6, shapley_cache=str(cache))
    images = AttributionLogger(method="self", num_samples=2)
    fit = trainer(tmp_path, [quality, images])
    fit.validate(explainer, TinyImages(), verbose=False)
    assert images.setups[0].players.num_players == 4 and (tmp_path / "explanations/self").is_dir()

    stored = torch.load(cache, weights_only=True)
    net = explainer.net.eval()
    x = torch.stack([TinyImages().val_set[int(i)]["input"] for i in stored["indices"]])
    truth = shapley_values(net.surrogate, net.masker, x, link=net.link, target=stored["targets"])[..., 0]
    assert torch.allclose(stored["values"], truth, atol=1e-6)
    estimate = net.attribute(x, stored["targets"])
    expected = (estimate - truth).square().sum(1).mean()
    assert quality.last_values["val/shapley_squared_error"] == pytest.approx(float(expected), rel=1e-4)

    # A new run reads the file instead of enumerating 2^d coalitions again ...
    monkeypatch.setattr("lit_xai.ground_truth.exact_shapley", lambda *a, **k: 1 / 0)
    reread = ExplanationQuality(["shapley_error"], method="self", num_samples=6, shapley_cache=str(cache))
    trainer(tmp_path, [reread]).validate(explainer, TinyImages(), verbose=False)
    assert reread.last_values == pytest.approx(quality.last_values)
    # ... but not when the file was written for another model.
    monkeypatch.undo()
    with torch.no_grad():
        explainer.net.surrogate.head.weight.add_(torch.randn_like(explainer.net.surrogate.head.weight))
    stale = ExplanationQuality(["shapley_error"], method="self", num_samples=6, shapley_cache=str(cache))
    with pytest.warns(UserWarning, match="do not add up"):
        trainer(tmp_path, [stale]).validate(explainer, TinyImages(), verbose=False)
    assert not torch.allclose(torch.load(cache, weights_only=True)["values"], stored["values"])


# ----------------------------------------------------------------------------------------------------------------
# Configuration errors: at construction or at setup, before any training step
# ----------------------------------------------------------------------------------------------------------------


def test_unknown_names_fail_at_construction():
    with pytest.raises(ValueError, match="unknown explanation method 'gradients'.*integrated_gradients"):
        AttributionLogger(method="gradients")
    with pytest.raises(ValueError, match="metrics must be distinct names"):
        ExplanationQuality(["deletion"])
    with pytest.raises(ValueError, match="key the options by method name"):
        AttributionLogger(method="integrated_gradients", method_kwargs={"steps": 8})
    with pytest.raises(ValueError, match="at most 48"):
        AttributionLogger(method=["gradient", "gradcam"], num_samples=32)


@pytest.mark.parametrize(
    "callback, data, match",
    [
        (AttributionLogger(target="true"), TinyImages(labels=False), "has no 'target'.*target='predicted'"),
        (ExplanationQuality(target="true", num_samples=4), TinyImages(labels=False), "target='predicted'"),
        (AttributionLogger(method="self"), TinyImages(), "has no attribute.*choose a baseline"),
        (ExplanationQuality(["localization"], num_samples=4), TinyImages(), "no 'annotation'"),
        (AttributionLogger(method="attention_rollout"), TinyImages(), "needs a timm VisionTransformer"),
        (
            AttributionLogger(network="model.stem"),
            TinyImages(),
            "returns outputs of shape .* not class logits",
        ),
    ],
)
def test_bad_configuration_fails_at_setup_before_training(tmp_path, callback, data, match):
    module = classifier(cls=CountingClassifier)
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, [callback]).fit(module, data)
    assert module.steps == 0


def test_num_samples_beyond_the_validation_set_use_all_of_it_with_a_warning(tmp_path):
    # A config's num_samples (32 in the explainer configs) stopped training on a small validation set, and it could
    # not be lowered without copying the YAML.
    images, quality = AttributionLogger(num_samples=13), ExplanationQuality(num_samples=20)
    with pytest.warns(
        UserWarning, match=r"num_samples=20\) asks for more inputs than the validation set has \(12\)"
    ):
        trainer(tmp_path, [images, quality]).fit(classifier(), TinyImages(n_val=12))
    assert images.num_samples == quality.num_samples == 12
    assert quality.batch["input"].shape[0] == 12


class SelfSupervised(ClassifierModule):
    """Trains without labels (confident predictions), so the data may have none."""

    def training_step(self, batch, batch_idx):
        return -self.model(batch["input"]).log_softmax(-1).max(-1).values.mean()

    def validation_step(self, batch, batch_idx):
        pass


def test_unlabeled_data_is_explained_for_the_predicted_class(tmp_path):
    images = AttributionLogger(method="gradient", num_samples=3)
    quality = ExplanationQuality(["insertion_deletion"], method="gradient", num_samples=4)
    trainer(tmp_path, [images, quality]).fit(SelfSupervised("cnn", 3, CNN), TinyImages(labels=False))
    assert len(list(tmp_path.rglob("*.png"))) == 1
    assert set(quality.last_values) == {"val/insertion_auc", "val/deletion_auc"}


# ----------------------------------------------------------------------------------------------------------------
# DDP: two CPU processes (gloo)
# ----------------------------------------------------------------------------------------------------------------


class RankMarkingLogger(AttributionLogger):
    """Leaves a file named after the rank of every process that logs images."""

    def _log(self, trainer, panels):
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        (root / f"logged_by_rank_{trainer.global_rank}").touch()
        return super()._log(trainer, panels)


@pytest.mark.slow  # two spawned processes: ~15 s on an idle 2-core machine, a minute under load
def test_ddp_scores_equal_single_process_and_only_rank_zero_logs_images(tmp_path):
    quality = dict(metrics=["insertion_deletion"], method="integrated_gradients", num_samples=9, batch_size=2)
    module = classifier()
    single = trainer(tmp_path / "single", [ExplanationQuality(**quality)])
    single.validate(module, TinyImages(), verbose=False)
    ddp = trainer(
        tmp_path / "ddp",
        [ExplanationQuality(**quality), RankMarkingLogger(method="gradient", num_samples=2)],
        strategy="ddp_spawn",
        devices=2,
    )
    ddp.validate(module, TinyImages(), verbose=False)
    for key in ("val/insertion_auc", "val/deletion_auc"):
        assert float(ddp.callback_metrics[key]) == pytest.approx(
            float(single.callback_metrics[key]), abs=1e-6
        )
    assert sorted(p.name for p in (tmp_path / "ddp").glob("logged_by_rank_*")) == ["logged_by_rank_0"]
    assert len(glob.glob(str(tmp_path / "ddp/explanations/gradient/*.png"))) == 1


def test_completeness_soundness_in_the_callback_equals_the_metric_on_every_class_map(tmp_path):
    data = TinyImages()
    quality = ExplanationQuality(
        ["completeness_soundness"], method="gradient", num_samples=6, batch_size=4, patch_size=2
    )
    module = classifier()
    trainer(tmp_path, [quality]).fit(module, data)

    batch = [data.val_set[int(i)] for i in quality.indices]
    x = torch.stack([b["input"] for b in batch])
    y = torch.stack([b["target"] for b in batch])
    model, players = module.model.eval(), PatchGrid(8, 2)
    explainer = build_attribution("gradient", model, players)
    num_classes = model(x).shape[1]
    maps = torch.stack([explainer.attribute(x, torch.full_like(y, c)) for c in range(num_classes)], dim=-1)
    scores = completeness_soundness(
        model, BaselineFill(players), x, maps, y, num_steps=8, generator=torch.Generator().manual_seed(0)
    )
    expected = {f"val/{k}": scores[k].mean() for k in ("completeness", "soundness", "worst_soundness")}
    assert set(quality.last_values) == set(expected)
    for key, value in expected.items():
        assert quality.last_values[key] == pytest.approx(float(value), abs=1e-5), key


def test_input_agnostic_class_maps_are_logged_during_training(tmp_path):
    # Input-agnostic saliency needs gradients inside validation (run under inference mode) and no data.
    callback = AttributionLogger(
        method="input_agnostic",
        num_samples=2,
        method_kwargs={"input_agnostic": {"steps": 4, "num_points": 4}},
    )
    trainer(tmp_path, [callback], epochs=1, limit_val_batches=1).fit(classifier(), TinyImages())
    files = sorted((tmp_path / "explanations/input_agnostic").glob("*.png"))
    assert len(files) == 1 and plt.imread(files[0]).ndim == 3
