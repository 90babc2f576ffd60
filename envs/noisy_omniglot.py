"""Many-class Omniglot classification with corrupted training labels: the data for learning which examples to
trust (metarl.algorithms.reweight).

`classes` characters of the Omniglot archives (drawn by `split_seed`) are the classes. Each character's 20
drawings are split once: the first 15 are the training pool, the 16th the small clean validation set, the last
4 the test set. Training labels are corrupted once, by `split_seed`: with `noise` > 0 a fraction `noise` of
them is replaced by a uniformly drawn other class (symmetric noise); with `imbalance` < 1 class c keeps
ceil(15 * imbalance^(c / (classes - 1))) training drawings (a long tail from 15 down to 15 * imbalance).

A "task" is a batch (the problem is one classification problem; the trainer draws batches as it draws tasks):

    split "train": support = k_support training examples (noisy labels), query = k_query clean validation ones
    split "test":  support = k_support training examples, query = k_query test examples (true labels)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from envs.base import Split, TaskBatch, check_positive, check_split
from envs.omniglot import SMALL_ARCHIVES, _names
from envs.omniglot_data import DRAWINGS_PER_CHARACTER, IMAGE_SIZE, OmniglotImages, load_archives
from envs.supervised import Data, SupervisedTaskDistribution

TRAIN_DRAWINGS, VAL_DRAWINGS = 15, 1


class NoisyOmniglotTasks(SupervisedTaskDistribution):
    name = "NoisyOmniglot"
    loss = "cross_entropy"
    input_shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    input_range = (0.0, 1.0)
    prediction_range = (-100.0, 100.0)

    def __init__(self, classes: int = 100, noise: float = 0.4, imbalance: float = 1.0, split_seed: int = 0,
                 archives: Sequence[str] | str = SMALL_ARCHIVES, data_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, verify_checksums: bool = True,
                 dtype: torch.dtype = torch.float32, data: OmniglotImages | None = None):
        check_positive(classes=classes)
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be in [0, 1), got {noise}")
        if not 0.0 < imbalance <= 1.0:
            raise ValueError(f"imbalance must be in (0, 1], got {imbalance}")
        self.data = data if data is not None else load_archives(_names(archives), data_dir, cache_dir, verify_checksums)
        if classes < 2 or classes > self.data.num_characters:
            raise ValueError(f"classes must be in 2..{self.data.num_characters} (the characters loaded), got {classes}")
        self.output_dim, self.noise, self.imbalance, self.dtype = int(classes), float(noise), float(imbalance), dtype
        g = torch.Generator().manual_seed(split_seed)
        chars = torch.randperm(self.data.num_characters, generator=g)[:classes]
        images = self.data.images[chars]  # (classes, 20, 28, 28) uint8
        keep = [math.ceil(TRAIN_DRAWINGS * imbalance ** (c / max(1, classes - 1))) for c in range(classes)]
        self.train_x = torch.cat([images[c, :k] for c, k in enumerate(keep)])
        self.clean_y = torch.cat([torch.full((k,), c) for c, k in enumerate(keep)])
        flip = torch.rand(len(self.clean_y), generator=g) < noise
        other = (self.clean_y + torch.randint(1, classes, (len(self.clean_y),), generator=g)) % classes
        #: the training labels the learner sees (noisy); clean_y stays for diagnostics and tests
        self.train_y = torch.where(flip, other, self.clean_y)
        self.val_x = images[:, TRAIN_DRAWINGS:TRAIN_DRAWINGS + VAL_DRAWINGS].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        self.val_y = torch.arange(classes).repeat_interleave(VAL_DRAWINGS)
        test = DRAWINGS_PER_CHARACTER - TRAIN_DRAWINGS - VAL_DRAWINGS
        self.test_x = images[:, TRAIN_DRAWINGS + VAL_DRAWINGS:].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        self.test_y = torch.arange(classes).repeat_interleave(test)

    @property
    def corrupted_fraction(self) -> float:
        return float((self.train_y != self.clean_y).float().mean())

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        """n batches: the tasks carry nothing but their index (the problem is the same)."""
        check_positive(tasks=n)
        check_split(split)
        return {"index": torch.arange(n)}

    def _draw(self, x: torch.Tensor, y: torch.Tensor, n: int, k: int, generator: torch.Generator) -> Data:
        idx = torch.randint(len(y), (n, k), generator=generator)
        return (x[idx].to(self.dtype) / 255.0).unsqueeze(-3), y[idx]

    def sample_data(self, tasks: TaskBatch, k: int, generator: torch.Generator, split: Split = "train") -> Data:
        """k training examples (noisy labels) per task."""
        return self._draw(self.train_x, self.train_y, tasks["index"].shape[0], k, generator)

    def sample_support_query(self, tasks: TaskBatch, k_support: int, k_query: int, generator: torch.Generator,
                             split: Split) -> tuple[Data, Data]:
        check_split(split)
        n = tasks["index"].shape[0]
        support = self.sample_data(tasks, k_support, generator, split)
        held_out = (self.val_x, self.val_y) if split == "train" else (self.test_x, self.test_y)
        return support, self._draw(*held_out, n, k_query, generator)
