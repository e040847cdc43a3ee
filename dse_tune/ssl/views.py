"""SSL views of a dataset's images: what a training step sees (the one part of data loading that is about SSL)."""

from __future__ import annotations

from typing import Callable

from torch.utils.data import Dataset


class ViewsDataset(Dataset):
    """Applies an SSL transform to the images of a dataset: ``(views, index)`` items.

    ``transform`` is typically a lightly multi-view transform (``DINOTransform``, ...): a list
    of tensors per image, which the default collate makes a list of (B, 3, h, w) tensors.
    """

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transform(self.dataset.load_image(index)), index
