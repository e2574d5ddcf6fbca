"""Image folders (torchvision ``ImageFolder`` layout) with optional human annotation masks.

Two layouts are read:

* ``root/{train,val,test}/<class>/<image>`` -- given splits. ``train`` is required; a missing ``val`` or
  ``test`` folder is carved out of ``train`` (stratified, by ``seed``) with ``val_fraction`` /
  ``test_fraction``. A root that contains a ``train`` folder is always read this way.
* ``root/<class>/<image>`` -- one pool, split by ``seed`` into train/val/test with the two fractions.

``annotation_root`` (optional) mirrors ``root``: the mask of ``root/<rel>/<name>.<ext>`` is
``annotation_root/<rel>/<name>.<any image ext>``, read as grayscale, scaled to ``[0, 1]`` and binarised at
``mask_threshold`` (``None`` keeps soft masks). A mask whose size differs from its image is first resized to
the image with nearest neighbours. Every image must have a mask; this is checked when the folders are scanned.

Transforms. With ``model_name`` the preprocessing is the timm model's pretrained data config
(``timm.data.resolve_data_config`` on ``timm.models.get_pretrained_cfg`` -- no weights are downloaded):
its interpolation, mean/std, and the eval geometry of ``timm.data.create_transform`` (resize the shorter
side to ``size / crop_pct`` then centre-crop; ``crop_mode="squash"`` resizes both sides). It is rebuilt with
``torchvision.transforms.v2`` so the *same* geometric transform is applied to the image and its mask (masks
are resampled with nearest neighbours). Without ``model_name``: resize to ``image_size`` x ``image_size``,
to tensor, normalise with ``mean``/``std`` (ImageNet statistics by default). ``augment=True`` adds a random
resized crop and horizontal flip to the training split only; both are applied jointly to image and mask, so
augmentation stays correct with annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from timm.models import get_pretrained_cfg
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from lit_xai.data.base import SplitDataModule, check_fractions, stratified_split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
Sample = tuple[Path, int, Path | None]


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _find_mask(image: Path, root: Path, annotation_root: Path) -> Path:
    rel = image.relative_to(root)
    exact = annotation_root / rel
    if exact.is_file():
        return exact
    for ext in IMAGE_EXTENSIONS:
        candidate = (annotation_root / rel).with_suffix(ext)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no annotation mask for image {image}: expected {exact} (any image extension).")


def read_image(path: Path, mode: str) -> Image.Image:
    """The image at ``path`` decoded to ``mode``; a file PIL cannot decode is a ``ValueError`` that names it.

    PIL's own errors (``OSError: Truncated File Read``, ``UnidentifiedImageError``) do not say which of thousands
    of files is broken.
    """
    try:
        with Image.open(path) as handle:
            return handle.convert(mode)
    except (OSError, SyntaxError, ValueError) as err:  # truncated, not an image, broken header
        raise ValueError(
            f"cannot read image {path} ({type(err).__name__}: {err}); replace or delete the file"
        ) from err


class ImageFolderDataset(Dataset):
    """Images (and masks) from a list of samples, returning ``{"input", "target"[, "annotation"]}``.

    Args:
        samples: ``(image_path, label, mask_path or None)`` triples.
        transform: Callable ``(PIL image, Mask or None) -> (image tensor, mask or None)`` (paired geometry).
        mask_threshold: Binarise masks at this value in ``[0, 1]``; ``None`` keeps them soft.
    """

    def __init__(self, samples: Sequence[Sample], transform, mask_threshold: float | None = 0.5):
        self.samples = list(samples)
        self.targets = [label for _, label, _ in self.samples]
        self.transform = transform
        self.mask_threshold = mask_threshold

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image_path, label, mask_path = self.samples[index]
        image = read_image(image_path, "RGB")
        if mask_path is None:
            x, _ = self.transform(image, None)
            return {"input": x, "target": torch.tensor(label)}
        mask = read_image(mask_path, "L")
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.NEAREST)
        x, m = self.transform(image, tv_tensors.Mask(torch.from_numpy(np.array(mask))[None]))
        m = m[0].float() / 255.0
        if self.mask_threshold is not None:
            m = (m >= self.mask_threshold).float()
        return {"input": x, "target": torch.tensor(label), "annotation": m}


class PairedTransform:
    """Apply one torchvision-v2 pipeline jointly to an image and an optional mask; return plain tensors."""

    def __init__(self, geometric: v2.Transform, mean: Sequence[float], std: Sequence[float]):
        self.geometric = geometric
        self.to_tensor = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        )

    def __call__(self, image: Image.Image, mask: tv_tensors.Mask | None):
        if mask is None:
            return self.to_tensor(self.geometric(image)).as_subclass(torch.Tensor), None
        image, mask = self.geometric(image, mask)
        return self.to_tensor(image).as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"PairedTransform({self.geometric}, {self.to_tensor})"


class ImageFolderDataModule(SplitDataModule):
    """Image folders with optional masks; input ``(3, S, S)``, annotation ``(B, S, S)`` when masks are given.

    Args:
        root: Dataset folder (see module docstring for the layouts).
        annotation_root: Folder of masks mirroring ``root``, or ``None``.
        model_name: timm model whose pretrained data config sets the preprocessing, or ``None``.
        image_size: Side of the model input; ``None`` uses the model's input size (224 without a model).
        batch_size: Samples per batch.
        val_fraction: Share of each class carved out for validation when there is no ``val`` folder.
        test_fraction: Share of each class carved out for testing when there is no ``test`` folder.
        seed: Seed of the split and of the training shuffle/augmentation.
        num_workers: DataLoader worker processes.
        augment: Random resized crop + horizontal flip on the training split (paired with masks).
        mask_threshold: Binarise masks at this value in ``[0, 1]``; ``None`` keeps grayscale masks.
        mean: Normalisation mean (default: the model's, else ImageNet's).
        std: Normalisation standard deviation (default: the model's, else ImageNet's).
        pin_memory: Pin host memory for faster GPU transfer.
    """

    def __init__(
        self,
        root: str | Path,
        annotation_root: str | Path | None = None,
        model_name: str | None = None,
        image_size: int | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
        mask_threshold: float | None = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pin_memory=pin_memory)
        check_fractions(val_fraction, test_fraction)
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}.")
        if mask_threshold is not None and not 0.0 <= mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1] or None, got {mask_threshold}.")
        self.save_hyperparameters()
        self.root = Path(root)
        self.annotation_root = None if annotation_root is None else Path(annotation_root)
        for folder in (self.root, self.annotation_root):
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"folder not found: {folder}")
        self.model_name = model_name
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.augment = augment
        self.mask_threshold = mask_threshold
        self.data_config = self._resolve_config(model_name, image_size, mean, std)
        self._classes: list[str] | None = None

    @staticmethod
    def _resolve_config(model_name, image_size, mean, std) -> dict:
        if model_name is None:
            size = image_size or 224
            config = {
                "input_size": (3, size, size),
                "interpolation": "bilinear",
                "mean": IMAGENET_DEFAULT_MEAN,
                "std": IMAGENET_DEFAULT_STD,
                "crop_pct": 1.0,
                "crop_mode": "squash",
            }
        else:
            pretrained_cfg = get_pretrained_cfg(model_name)
            if pretrained_cfg is None:
                raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models().")
            config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
            if image_size is not None:
                config["input_size"] = (3, image_size, image_size)
        if mean is not None:
            config["mean"] = tuple(mean)
        if std is not None:
            config["std"] = tuple(std)
        return config

    @property
    def image_size(self) -> int:
        return self.data_config["input_size"][-1]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def has_splits(self) -> bool:
        return (self.root / "train").is_dir()

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = _class_dirs(self.root / "train" if self.has_splits else self.root)
            if not self._classes:
                raise FileNotFoundError(f"no class folders in {self.root}; expected <class>/<image> files.")
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def transform(self, train: bool) -> PairedTransform:
        """Return the paired transform for the training (``train=True``) or evaluation splits."""
        cfg = self.data_config
        size = cfg["input_size"][-1]
        # timm's "random" interpolation is a training trick; evaluation and our paired crop use bilinear.
        name = cfg["interpolation"] if cfg["interpolation"] != "random" else "bilinear"
        interpolation = InterpolationMode(name)
        if train and self.augment:
            geometric = v2.Compose(
                [
                    v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation),
                    v2.RandomHorizontalFlip(),
                ]
            )
        else:
            # timm's eval geometry: scale size = floor(size / crop_pct), then a centre crop.
            scale = int(size / cfg.get("crop_pct", 1.0))
            resize_to = (scale, scale) if cfg.get("crop_mode") == "squash" else scale
            geometric = v2.Compose([v2.Resize(resize_to, interpolation=interpolation), v2.CenterCrop(size)])
        return PairedTransform(geometric, cfg["mean"], cfg["std"])

    def _scan(self, folder: Path, every_class: bool = False) -> list[Sample]:
        """The samples under ``folder``; ``every_class``: each class folder must hold an image (the training pool,
        where an empty class would still count as a class and shift the model's head)."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        samples, empty = [], []
        for name in _class_dirs(folder):
            if name not in lookup:
                raise ValueError(
                    f"class folder {folder / name} is not a class of the training data {self.classes}."
                )
            images = _images_in(folder / name)
            empty += [] if images else [folder / name]
            for image in images:
                mask = (
                    None
                    if self.annotation_root is None
                    else _find_mask(image, self.root, self.annotation_root)
                )
                samples.append((image, lookup[name], mask))
        if not samples:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}.")
        if every_class and empty:
            raise ValueError(
                f"class folder {empty[0]} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove "
                f"the folder"
            )
        return samples

    def build_datasets(self) -> tuple[ImageFolderDataset, ImageFolderDataset, ImageFolderDataset]:
        if self.has_splits:
            given = {s: self._scan(self.root / s, s == "train") for s in SPLITS if (self.root / s).is_dir()}
            pool = given["train"]
            fractions = [
                0.0 if s in given else f for s, f in zip(SPLITS[1:], (self.val_fraction, self.test_fraction))
            ]
        else:
            given, pool = {}, self._scan(self.root, every_class=True)
            fractions = [self.val_fraction, self.test_fraction]
        indices = stratified_split([label for _, label, _ in pool], *fractions, self.seed)
        # A given val/test folder is used as is; otherwise the split is the share carved out of the pool.
        splits = [
            given[name] if name != "train" and name in given else [pool[i] for i in idx]
            for name, idx in zip(SPLITS, indices)
        ]
        return tuple(
            ImageFolderDataset(samples, self.transform(train=name == "train"), self.mask_threshold)
            for name, samples in zip(SPLITS, splits)
        )
