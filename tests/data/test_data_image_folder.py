"""Tests for ImageFolderDataModule: layouts, paired image/mask transforms, timm preprocessing, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from lit_xai.data import ImageFolderDataModule

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _write_sample(root, annotation_root, rel, seed, size=24, mask_value=255):
    """A black image with a white rectangle (even corners, so 2x downscaling is exact) and its mask."""
    rng = np.random.default_rng(seed)
    top, left = (2 * rng.integers(0, size // 4, 2)).tolist()
    h, w = (2 * rng.integers(2, size // 4, 2)).tolist()
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[top : top + h, left : left + w] = 255
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + h, left : left + w] = mask_value
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / rel)
    if annotation_root is not None:
        (annotation_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(annotation_root / rel)


def _make_folder(tmp_path, layout=("",), classes=("cat", "dog"), per_class=5, masks=True, **kwargs):
    root, ann = tmp_path / "images", (tmp_path / "masks" if masks else None)
    seed = 0
    for split in layout:
        for cls in classes:
            for i in range(per_class):
                _write_sample(root, ann, f"{split}/{cls}/{i}.png".lstrip("/"), seed, **kwargs)
                seed += 1
    return root, ann


def _bright(x):
    """Pixels of a normalised (…, 3, H, W) batch that were white before normalisation."""
    return (x * 0.5 + 0.5).mean(-3) > 0.5


def test_single_root_with_masks(tmp_path):
    root, ann = _make_folder(tmp_path)
    dm = ImageFolderDataModule(
        root, ann, image_size=12, mean=MEAN, std=STD, val_fraction=0.2, test_fraction=0.2, batch_size=4
    )
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2 and dm.input_shape == (3, 12, 12)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 3, 12, 12) and batch["input"].dtype == torch.float32
    assert batch["annotation"].shape == (4, 12, 12) and batch["target"].dtype == torch.long
    assert set(batch["annotation"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(batch["annotation"].bool(), _bright(batch["input"])), "mask aligned with the image"
    paths = [[s[0] for s in d.samples] for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert [len(p) for p in paths] == [6, 2, 2] and len(set(sum(paths, []))) == 10
    assert all(sorted(d.targets) == [0, 1] for d in (dm.val_dataset, dm.test_dataset)), "stratified"
    again = ImageFolderDataModule(root, ann, val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert [s[0] for s in again.test_dataset.samples] == paths[2]
    others = []
    for seed in range(1, 6):
        other = ImageFolderDataModule(root, ann, val_fraction=0.2, test_fraction=0.2, seed=seed)
        other.setup()
        others.append([s[0] for s in other.test_dataset.samples])
    assert any(o != paths[2] for o in others)


def test_split_layout_carves_missing_test_from_train_and_masks_of_other_size(tmp_path):
    root, _ = _make_folder(tmp_path, layout=("train", "val"), per_class=4, masks=False)
    ann = tmp_path / "masks"
    for path in root.rglob("*.png"):  # half-resolution masks: they are resized to their image first
        rel = path.relative_to(root)
        (ann / rel).parent.mkdir(parents=True, exist_ok=True)
        big = np.array(Image.open(path).convert("L"))
        Image.fromarray(big[::2, ::2]).save(ann / rel)
    dm = ImageFolderDataModule(root, ann, image_size=24, mean=MEAN, std=STD, test_fraction=0.25)
    dm.setup()
    assert [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)] == [6, 8, 2]
    assert all("val" in str(p) for p, _, _ in dm.val_dataset.samples)
    assert all("train" in str(p) for p, _, _ in dm.test_dataset.samples)
    item = dm.val_dataset[0]
    assert torch.equal(item["annotation"].bool(), _bright(item["input"]))


def test_soft_masks_keep_gray_levels(tmp_path):
    root, ann = _make_folder(tmp_path, per_class=2, mask_value=102)
    dm = ImageFolderDataModule(
        root, ann, image_size=24, mask_threshold=None, val_fraction=0.0, test_fraction=0.0
    )
    dm.setup()
    assert torch.allclose(dm.train_dataset[0]["annotation"].unique(), torch.tensor([0.0, 102 / 255]))
    binary = ImageFolderDataModule(root, ann, image_size=24, val_fraction=0.0, test_fraction=0.0)
    binary.setup()
    assert binary.train_dataset[0]["annotation"].max() == 0.0  # 0.4 is below the default threshold 0.5


def test_timm_preprocessing_matches_create_transform(tmp_path):
    timm_data = pytest.importorskip("timm.data")
    root, _ = _make_folder(tmp_path, per_class=2, masks=False, size=40)
    dm = ImageFolderDataModule(root, model_name="vit_tiny_patch16_224", val_fraction=0.0, test_fraction=0.0)
    assert dm.data_config["mean"] == (0.5, 0.5, 0.5) and dm.input_shape == (3, 224, 224)
    dm.setup()
    item = dm.train_dataset[0]
    assert "annotation" not in item
    reference = timm_data.create_transform(**dm.data_config)(
        Image.open(dm.train_dataset.samples[0][0]).convert("RGB")
    )
    assert torch.allclose(item["input"], reference, atol=1e-5)
    small = ImageFolderDataModule(root, model_name="vit_tiny_patch16_224", image_size=32)
    assert small.input_shape == (3, 32, 32) and small.data_config["interpolation"] == "bicubic"


def test_augmentation_moves_image_and_mask_together(tmp_path):
    root, ann = _make_folder(tmp_path, per_class=3)
    dm = ImageFolderDataModule(
        root, ann, image_size=24, mean=MEAN, std=STD, augment=True, val_fraction=0.0, test_fraction=0.0
    )
    dm.setup()
    torch.manual_seed(0)
    first, second = dm.train_dataset[0], dm.train_dataset[0]
    agreement = [
        (item["annotation"].bool() == _bright(item["input"])).float().mean() for item in (first, second)
    ]
    assert min(agreement) > 0.9  # equal up to the interpolated rectangle border
    assert not torch.equal(first["input"], second["input"]), "training crops are random"


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataModule(tmp_path / "nowhere")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataModule(tmp_path / "empty").setup()
    (tmp_path / "no_classes").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolderDataModule(tmp_path / "no_classes").setup()
    root, ann = _make_folder(tmp_path, per_class=2)
    (ann / "dog" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="1.png"):
        ImageFolderDataModule(root, ann).setup()
    with pytest.raises(ValueError, match="unknown timm model"):
        ImageFolderDataModule(root, model_name="not_a_real_net")
    with pytest.raises(ValueError, match="mask_threshold"):
        ImageFolderDataModule(root, mask_threshold=2.0)


def test_unknown_class_in_val_folder(tmp_path):
    root, _ = _make_folder(tmp_path, layout=("train",), per_class=2, masks=False)
    _write_sample(root, None, "val/bird/0.png", 0)
    with pytest.raises(ValueError, match="bird"):
        ImageFolderDataModule(root).setup()
