"""Synthetic colour shapes with a ground-truth explanation mask.

A benchmark in the spirit of synthetic attribution tests with known ground truth (e.g. Arras, Osman & Samek,
*CLEVR-XAI*, Information Fusion 2022; Yang & Kim, *BIM*, 2019): the pixels that decide the label are known
exactly, so an explanation can be scored against them.

Construction (chosen so that nothing but the deciding shape reveals the label): every image shows exactly
one shape of **each** of the ``num_classes`` types (square, circle, triangle, cross, diamond, ring) on a
noisy background, in distinct cells of a ``grid`` x ``grid`` layout with random jitter and size. Exactly
one shape is red; the label is the *type* of the red shape. The set of types and the set of colours in an
image are therefore the same for every label -- a classifier has to find the red shape and read its form.
``annotation`` is that shape's pixel mask. Shapes never overlap, so the mask is the whole visible shape.

Images are RGB in ``[0, 1]`` (not standardised). Generation is vectorised in torch (a few thousand 32x32
images take well under a second) and deterministic for a seed; each split uses its own seed stream.
"""

from __future__ import annotations

import torch

from lit_xai.data.base import SplitDataModule, TensorDictDataset, split_seed

SHAPES = ("square", "circle", "triangle", "cross", "diamond", "ring")
TARGET_COLOUR = (0.9, 0.1, 0.1)
# Distractor colours: clearly not red (magenta and yellow share a red channel, so red alone is not enough).
DISTRACTOR_COLOURS = (
    (0.1, 0.8, 0.1),
    (0.15, 0.3, 0.95),
    (0.9, 0.85, 0.1),
    (0.1, 0.85, 0.85),
    (0.85, 0.1, 0.85),
    (0.9, 0.9, 0.9),
)


def _shape_mask(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of a shape in coordinates normalised to its box (``u``, ``v`` in ``[-1, 1]`` inside)."""
    au, av = u.abs(), v.abs()
    in_box = (au <= 1) & (av <= 1)
    if kind == "square":
        return in_box
    if kind == "circle":
        return u**2 + v**2 <= 1
    if kind == "triangle":  # apex up: the half-width grows linearly from the top row to the bottom row
        return in_box & (au <= (v + 1) / 2)
    if kind == "cross":
        return in_box & ((au <= 0.34) | (av <= 0.34))
    if kind == "diamond":
        return au + av <= 1
    if kind == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1) & (r2 >= 0.45**2)
    raise ValueError(f"unknown shape {kind!r}; choose from {SHAPES}.")


def make_shapes(
    n: int,
    image_size: int = 32,
    num_classes: int = 4,
    seed: int = 0,
    grid: int = 3,
    min_size: int = 6,
    noise: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` shape images.

    Args:
        n: Number of images.
        image_size: Side of the square images in pixels.
        num_classes: Number of shape types in each image (2 .. 6); also the number of classes.
        seed: Seed; the same arguments always give the same tensors.
        grid: The image is laid out as ``grid`` x ``grid`` cells, at most one shape per cell.
        min_size: Smallest shape side in pixels; the largest is the cell side ``image_size // grid``.
        noise: Standard deviation of the per-pixel Gaussian noise.

    Returns:
        ``(images (n, 3, S, S) float in [0, 1], labels (n,) long, masks (n, S, S) float in {0, 1})``.
        Labels are balanced (each class ``n // num_classes`` or one more times).
    """
    check_shapes_args(image_size, num_classes, grid, min_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    gen = torch.Generator().manual_seed(seed)
    cell = image_size // grid
    margin = (image_size - grid * cell) // 2  # centre the grid when image_size is not a multiple of it
    c = num_classes

    labels = (torch.arange(n) % c)[torch.randperm(n, generator=gen)]
    # Slot k holds the shape of type k; each slot gets its own cell (first c of a random permutation).
    cells = torch.rand(n, grid * grid, generator=gen).argsort(dim=1)[:, :c]
    sizes = torch.randint(min_size, cell + 1, (n, c), generator=gen).float()
    # Top-left offset inside the cell, uniform over the positions where the shape still fits.
    off_y = (torch.rand(n, c, generator=gen) * (cell - sizes + 1)).floor()
    off_x = (torch.rand(n, c, generator=gen) * (cell - sizes + 1)).floor()
    cy = margin + (cells // grid) * cell + off_y + sizes / 2
    cx = margin + (cells % grid) * cell + off_x + sizes / 2

    palette = torch.tensor(DISTRACTOR_COLOURS)
    colours = palette[torch.randint(0, len(palette), (n, c), generator=gen)]
    is_target = torch.nn.functional.one_hot(labels, c).bool()
    colours = torch.where(is_target.unsqueeze(-1), torch.tensor(TARGET_COLOUR), colours)
    colours = (colours + 0.16 * (torch.rand(n, c, 3, generator=gen) - 0.5)).clamp(0, 1)

    background = 0.3 * torch.rand(n, 1, 3, generator=gen)
    pix = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres
    # Shapes never overlap, so one map of "which slot covers this pixel" (0 = background) describes the
    # whole scene; a single gather from each image's colour table then paints it.
    slot = torch.zeros(n, image_size, image_size, dtype=torch.long)
    for k in range(c):
        half = (sizes[:, k] / 2).view(n, 1, 1)
        v = (pix.view(1, -1, 1) - cy[:, k].view(n, 1, 1)) / half
        u = (pix.view(1, 1, -1) - cx[:, k].view(n, 1, 1)) / half
        slot.masked_fill_(_shape_mask(SHAPES[k], u, v), k + 1)
    table = torch.cat([background, colours], dim=1)  # (n, 1 + c, 3)
    images = table[torch.arange(n).view(n, 1, 1), slot].permute(0, 3, 1, 2).contiguous()
    images.add_(noise * torch.randn(images.shape, generator=gen)).clamp_(0, 1)
    target_masks = (slot == labels.view(n, 1, 1) + 1).float()
    return images, labels, target_masks


def check_shapes_args(image_size: int, num_classes: int, grid: int, min_size: int) -> None:
    """Raise a ``ValueError`` naming the fix when the shapes cannot be drawn as asked."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(
            f"num_classes must be between 2 and {len(SHAPES)} (one per shape type), got {num_classes}."
        )
    if num_classes > grid * grid:
        raise ValueError(
            f"num_classes ({num_classes}) shapes do not fit in a {grid}x{grid} grid; raise grid."
        )
    if min_size < 3:
        raise ValueError(f"min_size must be >= 3 pixels for the shapes to be told apart, got {min_size}.")
    if image_size // grid < min_size:
        raise ValueError(
            f"image_size {image_size} is too small for a {grid}x{grid} grid of shapes of at least {min_size} "
            f"pixels; use image_size >= {grid * min_size}, a smaller grid or a smaller min_size."
        )


class ShapesDataModule(SplitDataModule):
    """Synthetic shapes (see module docstring); input ``(3, S, S)``, annotation ``(B, S, S)``.

    Args:
        image_size: Side of the images.
        num_train: Training images.
        num_val: Validation images.
        num_test: Test images.
        num_classes: Shape types per image and number of classes (2 .. 6).
        seed: Seed of the generated data (each split its own stream) and of the training shuffle.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        grid: Layout grid side; shapes sit in distinct cells.
        min_size: Smallest shape side in pixels (the largest is ``image_size // grid``).
        noise: Standard deviation of the per-pixel Gaussian noise.
        pin_memory: Pin host memory for faster GPU transfer.
    """

    def __init__(
        self,
        image_size: int = 32,
        num_train: int = 3000,
        num_val: int = 500,
        num_test: int = 500,
        num_classes: int = 4,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        grid: int = 3,
        min_size: int = 6,
        noise: float = 0.05,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_shapes_args(image_size, num_classes, grid, min_size)
        if min(num_train, num_val, num_test) < 1:
            raise ValueError(
                f"num_train, num_val and num_test must be >= 1, got {num_train}, {num_val}, {num_test}."
            )
        self.save_hyperparameters()
        self.image_size = image_size
        self.sizes = (num_train, num_val, num_test)
        self.num_classes = num_classes
        self.grid = grid
        self.min_size = min_size
        self.noise = noise

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return SHAPES[: self.num_classes]

    def build_datasets(self) -> tuple[TensorDictDataset, TensorDictDataset, TensorDictDataset]:
        return tuple(
            TensorDictDataset(
                *make_shapes(
                    n,
                    self.image_size,
                    self.num_classes,
                    split_seed(self.seed, split_id),
                    self.grid,
                    self.min_size,
                    self.noise,
                )
            )
            for split_id, n in enumerate(self.sizes)
        )
