"""Tests for TabularDataModule: the bundled breast-cancer data and CSV files."""

import numpy as np
import pytest
import torch

from lit_xai.data import TabularDataModule, read_csv_table


def test_breast_cancer_format_metadata_and_standardisation():
    dm = TabularDataModule(batch_size=16)
    assert dm.num_features == 30 and len(dm.feature_names) == 30 and dm.num_classes == 2
    assert dm.input_shape == (30,) and dm.feature_names[0] == "mean radius"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input", "target"} and batch["input"].shape == (16, 30)
    assert batch["input"].dtype == torch.float32 and batch["target"].dtype == torch.long
    x = dm.train_dataset.inputs
    assert torch.allclose(x.mean(0), torch.zeros(30), atol=1e-4) and torch.allclose(
        x.std(0), torch.ones(30), atol=1e-3
    )
    # Validation/test use the training statistics, so they are only roughly standardised.
    assert not torch.allclose(dm.test_dataset.inputs.mean(0), torch.zeros(30), atol=1e-4)
    train, val, test = dm.split_indices
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(569))


def test_seeding():
    a, b, c = (TabularDataModule(seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_dataset.inputs, b.val_dataset.inputs)
    assert not np.array_equal(a.split_indices[1], c.split_indices[1])


def _write_csv(path, n=40):
    rng = np.random.default_rng(0)
    rows = ["height,species,weight,age"]
    species = ["setosa", "virginica", "versicolor"]
    for i in range(n):
        rows.append(f"{rng.normal(10, 3):.4f},{species[i % 3]},{rng.normal(70, 9):.4f},{i}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_with_string_labels_in_a_middle_column(tmp_path):
    path = _write_csv(tmp_path / "plants.csv")
    dm = TabularDataModule(source=str(path), target_column="species", val_fraction=0.25, test_fraction=0.25)
    assert dm.feature_names == ["height", "weight", "age"] and dm.num_features == 3
    assert dm.class_names == ["setosa", "versicolor", "virginica"] and dm.num_classes == 3
    dm.setup()
    raw, labels, _, _ = read_csv_table(path, "species")
    for ds, idx in zip((dm.train_dataset, dm.val_dataset, dm.test_dataset), dm.split_indices):
        assert torch.allclose(ds.inputs * dm.std + dm.mean, torch.from_numpy(raw[idx]), atol=1e-4)
        assert torch.equal(ds.targets, torch.from_numpy(labels[idx]))
    assert labels[1] == 2 and labels[2] == 1  # "virginica" -> 2, "versicolor" -> 1 (sorted names)


def test_csv_numeric_labels_default_to_last_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{10 if i % 2 else 5}\n" for i in range(20)))
    dm = TabularDataModule(source=str(path))
    assert dm.feature_names == ["a", "b"] and dm.class_names == ["5", "10"]
    dm.setup()
    assert set(dm.train_dataset.targets.tolist()) == {0, 1}


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TabularDataModule(source=str(tmp_path / "missing.csv")).setup()
    path = _write_csv(tmp_path / "p.csv")
    with pytest.raises(ValueError, match="colour"):
        TabularDataModule(source=str(path), target_column="colour").setup()
    with pytest.raises(ValueError, match="not a number"):
        TabularDataModule(source=str(path), target_column="age").setup()  # "species" would be a feature
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3"):
        read_csv_table(ragged)
    with pytest.raises(ValueError, match="breast_cancer"):
        TabularDataModule(source="breast-cancer")
