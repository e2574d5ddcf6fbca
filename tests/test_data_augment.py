"""RandomShift: an exact translation, a fill for vacated pixels, shifts keyed by (seed, epoch, index)."""

import pytest
import torch

from lit_xai.data.augment import RandomShift
from lit_xai.data.base import TensorDictDataset
from lit_xai.data.resumable import EpochShuffleSampler


def _dots(n: int = 6, size: int = 9) -> TensorDictDataset:
    # One bright pixel in the centre of each image: its new position is the shift.
    images = torch.zeros(n, 1, size, size)
    images[:, 0, size // 2, size // 2] = 1.0
    return TensorDictDataset(images, torch.arange(n))


def test_moves_the_image_by_the_reported_shift_and_fills_the_border():
    data = RandomShift(_dots(), max_shift=2, fill=-5.0, seed=3)
    moved = 0
    for index in range(len(data)):
        dy, dx = data.shift_of(index)
        image = data[index]["input"][0]
        assert image[4 + dy, 4 + dx] == 1.0
        assert image.sum() == 1.0 + (-5.0) * (9 * (abs(dy) + abs(dx)) - abs(dy) * abs(dx))
        moved += (dy, dx) != (0, 0)
    assert moved > 0


def test_shifts_depend_on_seed_epoch_and_index_only():
    first, second = RandomShift(_dots(50), 2, seed=0), RandomShift(_dots(50), 2, seed=0)
    before = [first.shift_of(i) for i in range(50)]
    # The order in which samples are drawn does not matter.
    assert [second.shift_of(i) for i in reversed(range(50))][::-1] == before
    first.set_epoch(1)
    assert [first.shift_of(i) for i in range(50)] != before
    assert {s for shift in before for s in shift} == {-2, -1, 0, 1, 2}


def test_the_training_sampler_forwards_its_epoch():
    data = RandomShift(_dots(), 1)
    EpochShuffleSampler(data, seed=0).set_epoch(4)
    assert data.epoch == 4


def test_refuses_what_it_would_break():
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(_dots(), -1)
    annotated = TensorDictDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="annotation"):
        RandomShift(annotated, 1)[0]
