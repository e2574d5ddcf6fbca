"""Tests for DigitsDataModule and DecoyDigitsDataModule (Ross et al. 2017 decoy patches)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from lit_xai.data import DecoyDigitsDataModule, DigitsDataModule, decoy_level, load_digit_images

N_DIGITS = 1797


def _ready(cls, **kwargs):
    dm = cls(**kwargs)
    dm.setup("fit")
    return dm


def test_digits_batch_format_and_metadata():
    dm = _ready(DigitsDataModule, batch_size=32)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input", "target"}
    assert batch["input"].shape == (32, *dm.input_shape) == (32, 1, 8, 8)
    assert batch["input"].dtype == torch.float32 and batch["target"].dtype == torch.long
    assert dm.num_classes == 10 and int(batch["target"].max()) < 10
    assert sum(len(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)) == N_DIGITS


def test_digits_splits_are_stratified_disjoint_and_cover():
    dm = _ready(DigitsDataModule, normalize=False)
    train, val, test = dm.split_indices
    assert (
        len(np.intersect1d(train, val))
        == len(np.intersect1d(train, test))
        == len(np.intersect1d(val, test))
        == 0
    )
    assert len(train) + len(val) + len(test) == N_DIGITS
    images, labels = load_digit_images()
    assert torch.equal(dm.test_dataset.inputs, images[test]) and torch.equal(
        dm.test_dataset.targets, labels[test]
    )
    share = torch.bincount(dm.val_dataset.targets, minlength=10).float() / torch.bincount(labels).float()
    assert torch.allclose(share, torch.full((10,), 0.15), atol=0.02)


def test_digits_scaling_and_train_standardisation():
    raw = _ready(DigitsDataModule, normalize=False)
    assert raw.train_dataset.inputs.min() == 0 and raw.train_dataset.inputs.max() == 1
    dm = _ready(DigitsDataModule, normalize=True)
    x = dm.train_dataset.inputs
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-4
    assert torch.allclose(dm.test_dataset.inputs * dm.std + dm.mean, raw.test_dataset.inputs, atol=1e-5)


def test_digits_seeding():
    a, b, c = (_ready(DigitsDataModule, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val_dataset.inputs, b.val_dataset.inputs)
    assert not np.array_equal(a.split_indices[1], c.split_indices[1])


def _corner_blocks(x, p):
    """The four p x p corner blocks of (N, 1, H, W) images as (N, 4, p*p)."""
    img = x[:, 0]
    blocks = [img[:, :p, :p], img[:, :p, -p:], img[:, -p:, :p], img[:, -p:, -p:]]
    return torch.stack([b.flatten(1) for b in blocks], dim=1)


@pytest.mark.parametrize("annotation", ["box", "ink"])
def test_decoy_patch_outside_annotation_and_encodes_label_only_in_train(annotation):
    dm = _ready(DecoyDigitsDataModule, annotation=annotation)
    assert dm.input_shape == (1, 16, 16)
    batch = next(iter(dm.train_dataloader()))
    assert batch["annotation"].shape == (64, 16, 16) and batch["input"].shape == (64, 1, 16, 16)
    matches = {}
    for name in ("train", "val", "test"):
        ds = getattr(dm, f"{name}_dataset")
        assert ds.inputs.min() >= 0 and ds.inputs.max() <= 1
        assert set(ds.annotations.unique().tolist()) <= {0.0, 1.0}
        blocks = _corner_blocks(ds.inputs, 4)
        lit = blocks.amax(dim=2) > 0
        assert (lit.sum(dim=1) == 1).all(), "exactly one corner carries a patch"
        patch = blocks[lit]  # (N, 16): each patch is one constant gray level
        assert torch.equal(patch.amin(1), patch.amax(1))
        levels = patch[:, 0]
        assert torch.isin(levels, decoy_level(torch.arange(10))).all()
        # The patch pixels lie outside the annotation; the annotation is where the digit is.
        patch_pixels = torch.zeros_like(ds.inputs[:, 0], dtype=torch.bool)
        for k, (rows, cols) in enumerate(
            [
                (slice(0, 4), slice(0, 4)),
                (slice(0, 4), slice(-4, None)),
                (slice(-4, None), slice(0, 4)),
                (slice(-4, None), slice(-4, None)),
            ]
        ):
            patch_pixels[:, rows, cols] |= lit[:, k].view(-1, 1, 1)
        assert (ds.annotations[patch_pixels] == 0).all()
        ink = ds.inputs[:, 0] > 0
        assert (ds.annotations.bool() | patch_pixels)[ink].all(), (
            "every lit pixel is digit (annotated) or decoy"
        )
        matches[name] = (levels == decoy_level(ds.targets)).float().mean().item()
    assert matches["train"] == 1.0 and matches["val"] == 1.0
    assert matches["test"] < 0.3  # random levels: about 1 in 10 agree by chance


def test_clean_variant_shares_splits_and_digit_pixels():
    decoy, clean = _ready(DecoyDigitsDataModule), _ready(DecoyDigitsDataModule, decoy=False)
    for name in ("train", "test"):
        d, c = getattr(decoy, f"{name}_dataset"), getattr(clean, f"{name}_dataset")
        assert torch.equal(d.targets, c.targets)
        assert torch.equal(d.inputs[:, :, 4:12, 4:12], c.inputs[:, :, 4:12, 4:12])
        border = c.inputs.clone()
        border[:, :, 4:12, 4:12] = 0
        assert (border == 0).all(), "clean images have an empty border"
    images, _ = load_digit_images()
    assert torch.equal(clean.test_dataset.inputs[:, :, 4:12, 4:12], images[clean.split_indices[2]])


def test_decoy_upscale_and_errors():
    dm = _ready(DecoyDigitsDataModule, upscale=2, border=3, decoy_size=3)
    assert dm.input_shape == (1, 22, 22) and dm.train_dataset.inputs.shape[-1] == 22
    assert dm.train_dataset.annotations[:, 3:19, 3:19].eq(1).all()
    with pytest.raises(ValueError, match="border"):
        DecoyDigitsDataModule(border=2, decoy_size=3)
    with pytest.raises(ValueError, match="annotation"):
        DecoyDigitsDataModule(annotation="digit")
    with pytest.raises(ValueError, match="fraction"):
        DecoyDigitsDataModule(val_fraction=0.6, test_fraction=0.5)


def _mlp_test_accuracy(decoy: bool, epochs: int = 20) -> float:
    """Ross et al.'s plain MLP (50, 30), Adam 1e-3, trained on the (decoyed or clean) training split."""
    torch.manual_seed(0)
    dm = _ready(DecoyDigitsDataModule, decoy=decoy, batch_size=64)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(256, 50), nn.ReLU(), nn.Linear(50, 30), nn.ReLU(), nn.Linear(30, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = dm.train_dataset.inputs, dm.train_dataset.targets
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (model(dm.test_dataset.inputs).argmax(1) == dm.test_dataset.targets).float().mean().item()


def test_plain_mlp_takes_the_shortcut():
    """The decoy is strong enough that Ross's plain MLP loses >= 20 test points (measured: ~30-40)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP runs fastest on one thread, and much faster on a busy machine
    try:
        clean, decoyed = _mlp_test_accuracy(decoy=False), _mlp_test_accuracy(decoy=True)
    finally:
        torch.set_num_threads(threads)
    assert clean > 0.85
    assert clean - decoyed >= 0.2, (clean, decoyed)
