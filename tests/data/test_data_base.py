"""Tests for the shared split and loader code of lit_xai.data."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_xai.data import SplitDataModule, TensorDictDataset, stratified_split
from lit_xai.data.base import check_fractions
from lit_xai.data.resumable import EpochShuffleSampler


def _labels(n=200, classes=4, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def test_stratified_split_disjoint_covering_and_proportional():
    labels = _labels()
    train, val, test = stratified_split(labels, 0.2, 0.1, seed=0)
    together = np.concatenate([train, val, test])
    assert len(together) == len(labels) and set(together.tolist()) == set(range(len(labels)))
    for cls in range(4):
        n = (labels == cls).sum()
        assert abs((labels[val] == cls).sum() - 0.2 * n) <= 1
        assert abs((labels[test] == cls).sum() - 0.1 * n) <= 1


def test_stratified_split_is_seeded():
    labels = _labels()
    a, b, c = (
        stratified_split(labels, 0.2, 0.1, seed=3),
        stratified_split(labels, 0.2, 0.1, seed=3),
        stratified_split(labels, 0.2, 0.1, seed=4),
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_zero_fraction_gives_empty_split():
    train, val, test = stratified_split(_labels(), 0.0, 0.25, seed=0)
    assert len(val) == 0 and len(train) + len(test) == 200


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_bad_fractions_raise(val, test):
    with pytest.raises(ValueError, match="fraction"):
        check_fractions(val, test)


def test_tensor_dict_dataset_items_and_length_check():
    ds = TensorDictDataset(torch.zeros(5, 2), torch.arange(5), torch.ones(5, 2))
    item = ds[3]
    assert set(item) == {"input", "target", "annotation"} and item["target"].dtype == torch.long
    assert "annotation" not in TensorDictDataset(torch.zeros(5, 2), torch.arange(5))[0]
    with pytest.raises(ValueError, match="same length"):
        TensorDictDataset(torch.zeros(5, 2), torch.arange(4))


class _Range(SplitDataModule):
    def build_datasets(self):
        x = torch.arange(100.0).unsqueeze(1)
        return (
            TensorDictDataset(x[:80], torch.zeros(80)),
            TensorDictDataset(x[80:90], torch.zeros(10)),
            TensorDictDataset(x[90:], torch.zeros(10)),
        )


def _order(dm):
    return torch.cat([b["input"][:, 0] for b in dm.train_dataloader()])


def test_train_loader_shuffles_reproducibly_and_eval_loaders_do_not():
    a, b, c = _Range(batch_size=16, seed=1), _Range(batch_size=16, seed=1), _Range(batch_size=16, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    order = _order(a)
    assert torch.equal(order, _order(b)) and not torch.equal(order, _order(c))
    assert not torch.equal(order, torch.arange(80.0)) and torch.equal(order.sort().values, torch.arange(80.0))
    assert torch.equal(torch.cat([x["input"][:, 0] for x in a.val_dataloader()]), torch.arange(80.0, 90.0))


def test_loader_options_and_errors():
    dm = _Range(batch_size=8, num_workers=2)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    dm.setup()
    first = dm.train_dataset
    dm.setup("test")  # idempotent: the stages share one set of datasets
    assert dm.train_dataset is first
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 2 and loader.batch_size == 8
    in_process = _Range(num_workers=0)
    in_process.setup()
    assert not in_process.train_dataloader().persistent_workers
    with pytest.raises(ValueError, match="batch_size"):
        _Range(batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        _Range(num_workers=-1)


def _as_rank(dm: SplitDataModule, rank: int, world_size: int) -> SplitDataModule:
    """Attach a stand-in for the trainer of process ``rank`` of a ``world_size``-process DDP run."""
    dm.trainer = SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
    )
    return dm


def test_eval_loaders_split_samples_across_processes_without_duplicates():
    # 10 validation samples on 3 processes: 4 + 3 + 3, every sample once (a DistributedSampler pads to 12).
    shares = []
    for rank in range(3):
        dm = _as_rank(_Range(batch_size=2), rank, 3)
        dm.setup()
        shares.append(torch.cat([b["input"][:, 0] for b in dm.val_dataloader()]))
    assert [len(share) for share in shares] == [4, 3, 3]
    assert torch.equal(torch.cat(shares).sort().values, torch.arange(80.0, 90.0))
    # Training is left to Lightning, which shards it with equal batch counts (DDP needs them for the gradients).
    assert isinstance(dm.train_dataloader().sampler, EpochShuffleSampler)


def test_an_eval_split_smaller_than_the_number_of_processes_is_one_clear_error():
    dm = _as_rank(_Range(), 0, 11)
    dm.setup()
    with pytest.raises(
        ValueError, match="the val split of _Range has 10 samples, fewer than the 11 processes"
    ):
        dm.val_dataloader()
