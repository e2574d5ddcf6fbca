"""Tests for the synthetic shapes data: format, determinism and ground-truth mask alignment."""

import pytest
import torch

from lit_xai.data import SHAPES, ShapesDataModule, make_shapes
from lit_xai.data.shapes import TARGET_COLOUR


def _shape_of(mask: torch.Tensor) -> int:
    """Read the type (index into SHAPES[:4]) of one binary mask from its form, independently of the drawing code."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if bool(box.all()):
        return SHAPES.index("square")
    if box[0].sum() < box[-1].sum():  # narrow top row, wide bottom row
        return SHAPES.index("triangle")
    # A quarter of the way in from the corner lies inside a disc but between the arms of a cross.
    return (
        SHAPES.index("circle") if bool(box[box.shape[0] // 4, box.shape[1] // 4]) else SHAPES.index("cross")
    )


def test_format_ranges_and_balance():
    x, y, m = make_shapes(400, seed=1)
    assert x.shape == (400, 3, 32, 32) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == torch.long and torch.equal(torch.bincount(y), torch.full((4,), 100))
    assert m.shape == (400, 32, 32) and set(m.unique().tolist()) == {0.0, 1.0}
    assert (m.sum((1, 2)) >= 6).all()


def test_annotation_is_the_red_shape_and_its_form_is_the_label():
    x, y, m = make_shapes(500, seed=2, noise=0.0)
    red = (x[:, 0] > 0.8) & (x[:, 1] < 0.2) & (x[:, 2] < 0.2)
    assert torch.equal(red, m.bool()), "the annotated pixels are exactly the target-coloured ones"
    assert torch.allclose(x.permute(0, 2, 3, 1)[m.bool()].mean(0), torch.tensor(TARGET_COLOUR), atol=0.02)
    assert all(_shape_of(mask.bool()) == label for mask, label in zip(m, y.tolist()))


def test_drawn_area_does_not_reveal_the_label():
    """Every image shows one shape of each type, so the total drawn area is the same for every label."""
    x, y, _ = make_shapes(800, seed=4, noise=0.0)
    # Shapes are the pixels that differ from the flat background colour of their image.
    drawn = (x - x[:, :, :1, :1]).abs().amax(1) > 1e-6
    area_by_class = torch.stack([drawn[y == c].float().sum((1, 2)).mean() for c in range(4)])
    assert (area_by_class.max() - area_by_class.min()) / area_by_class.mean() < 0.05


def test_seeding():
    a = make_shapes(50, seed=7)
    b = make_shapes(50, seed=7)
    c = make_shapes(50, seed=8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_datamodule_batches_and_splits():
    dm = ShapesDataModule(num_train=200, num_val=40, num_test=40, batch_size=16, num_classes=3, seed=5)
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 3 and dm.class_names == SHAPES[:3]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (16, 3, 32, 32) and batch["annotation"].shape == (16, 32, 32)
    assert batch["target"].dtype == torch.long and int(batch["target"].max()) < 3
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [200, 40, 40]
    # Each split is generated from its own stream: no image is shared.
    flat = [d.inputs.flatten(1) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert torch.cdist(flat[0], flat[1]).min() > 0 and torch.cdist(flat[1], flat[2]).min() > 0
    again = ShapesDataModule(num_train=200, num_val=40, num_test=40, num_classes=3, seed=5)
    again.setup()
    assert torch.equal(again.test_dataset.inputs, dm.test_dataset.inputs)
    assert torch.equal(again.test_dataset.annotations, dm.test_dataset.annotations)
    other = ShapesDataModule(num_train=200, num_val=40, num_test=40, num_classes=3, seed=6)
    other.setup()
    assert not torch.equal(other.test_dataset.inputs, dm.test_dataset.inputs)


def test_other_sizes_and_six_classes():
    x, y, m = make_shapes(60, image_size=45, num_classes=6, seed=0)
    assert x.shape == (60, 3, 45, 45) and int(y.max()) == 5 and m.shape == (60, 45, 45)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 16}, "too small"),
        ({"num_classes": 7}, "num_classes"),
        ({"num_classes": 5, "grid": 2, "image_size": 40}, "grid"),
        ({"min_size": 2}, "min_size"),
        ({"num_val": 0}, "num_val"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataModule(**kwargs)
