"""Tabular classification data: a bundled scikit-learn dataset or any CSV file.

``source`` is either the name of a dataset bundled with scikit-learn (``"breast_cancer"``: Wisconsin
diagnostic breast cancer, 569 x 30, 2 classes; ``"wine"``; ``"iris"``) -- nothing is downloaded -- or a path to
a CSV file with a header row. Features are standardised with the mean and standard deviation of the *training*
split only (exposed as ``mean`` / ``std``); constant columns are left centred rather than divided by zero.
Labels of a CSV may be strings or numbers; their sorted distinct values become classes ``0 .. C-1``
(``class_names`` keeps the originals). Splits are stratified and fixed by ``seed``.

Metadata (``feature_names``, ``num_features``, ``num_classes``, ``input_shape``) is available right after
construction -- the table is read on first use -- so a CLI can size the model from the data module.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets as sk_datasets

from lit_xai.data.base import SplitDataModule, TensorDictDataset, check_fractions, stratified_split

SKLEARN_SOURCES = {
    "breast_cancer": sk_datasets.load_breast_cancer,
    "wine": sk_datasets.load_wine,
    "iris": sk_datasets.load_iris,
}


def _parse_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv_table(
    path: str | Path, target_column: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read a numeric feature table and a label column from a CSV file with a header row.

    Args:
        path: CSV file.
        target_column: Name of the label column; ``None`` takes the last column.

    Returns:
        ``(features (N, F) float32, labels (N,) int64, feature_names, class_names)``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Unknown target column, ragged rows, empty values, or non-numeric feature values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if len(rows) < 2:
        raise ValueError(f"{path} needs a header row and at least one data row.")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if target_column is None:
        target_column = header[-1]
    if target_column not in header:
        raise ValueError(f"target_column {target_column!r} is not a column of {path}; columns: {header}.")
    target_idx = header.index(target_column)
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}, line {line}: {len(row)} values but the header has {len(header)} columns."
            )

    feature_idx = [j for j in range(len(header)) if j != target_idx]
    features = np.empty((len(body), len(feature_idx)), dtype=np.float32)
    for i, row in enumerate(body):
        for k, j in enumerate(feature_idx):
            value = _parse_number(row[j])
            if value is None or np.isnan(value):
                raise ValueError(
                    f"{path}, line {i + 2}, column {header[j]!r}: {row[j]!r} is not a number; encode "
                    "categorical features numerically and fill missing values before loading."
                )
            features[i, k] = value

    raw_labels = [row[target_idx].strip() for row in body]
    if any(label == "" for label in raw_labels):
        raise ValueError(f"{path}: column {target_column!r} has empty labels; drop or fill those rows.")
    numbers = [_parse_number(label) for label in raw_labels]
    if all(n is not None for n in numbers):  # numeric labels: order classes by value, not as text
        values = sorted(set(numbers))
        lookup = {v: i for i, v in enumerate(values)}
        labels = np.array([lookup[n] for n in numbers], dtype=np.int64)
        class_names = [f"{v:g}" for v in values]
    else:
        class_names = sorted(set(raw_labels))
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = np.array([lookup[name] for name in raw_labels], dtype=np.int64)
    return features, labels, [header[j] for j in feature_idx], class_names


class TabularDataModule(SplitDataModule):
    """Standardised tabular features ``(F,)`` with integer labels; no annotation.

    Args:
        source: ``"breast_cancer"``, ``"wine"``, ``"iris"`` or a path to a CSV file.
        target_column: Label column of a CSV (``None``: the last column). Ignored for bundled datasets.
        batch_size: Samples per batch.
        val_fraction: Share of each class used for validation.
        test_fraction: Share of each class used for testing.
        seed: Seed of the stratified split and of the training shuffle.
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory for faster GPU transfer.
    """

    def __init__(
        self,
        source: str = "breast_cancer",
        target_column: str | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_fractions(val_fraction, test_fraction)
        if source not in SKLEARN_SOURCES and not str(source).lower().endswith(".csv"):
            raise ValueError(
                f"source must be one of {sorted(SKLEARN_SOURCES)} or a path to a .csv file, got {source!r}."
            )
        self.save_hyperparameters()
        self.source = str(source)
        self.target_column = target_column
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self._table: tuple[np.ndarray, np.ndarray, list[str], list[str]] | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def _load(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        if self._table is None:
            if self.source in SKLEARN_SOURCES:
                bunch = SKLEARN_SOURCES[self.source]()
                self._table = (
                    bunch.data.astype(np.float32),
                    bunch.target.astype(np.int64),
                    [str(name) for name in bunch.feature_names],
                    [str(name) for name in bunch.target_names],
                )
            else:
                self._table = read_csv_table(self.source, self.target_column)
        return self._table

    @property
    def feature_names(self) -> list[str]:
        return self._load()[2]

    @property
    def class_names(self) -> list[str]:
        return self._load()[3]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int]:
        return (self.num_features,)

    def build_datasets(self) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
        features, labels, _, _ = self._load()
        x, y = torch.from_numpy(features), torch.from_numpy(labels)
        splits = stratified_split(labels, self.val_fraction, self.test_fraction, self.seed)
        self.split_indices = splits
        train = x[splits[0]]
        self.mean = train.mean(dim=0)
        std = train.std(dim=0)
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        x = (x - self.mean) / self.std
        return tuple(TensorDictDataset(x[idx], y[idx]) for idx in splits)
