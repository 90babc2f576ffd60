"""Omniglot N-way K-shot classification (MAML paper, section 5.2) as H = 1 tasks.

A task is N classes; a class is a character, or a character rotated by 90, 180 or 270 degrees (rotations as
new classes, as in the MAML paper). Task parameters: `classes` (tasks, N) long, global class ids
(character * 4 + quarter turns); label j of a task is its j-th sampled class, and classes are drawn in random
order, so labels are permuted per task. Support and query sets are K and Q drawings per class, disjoint,
drawn without replacement from the 20 drawings of each character, in shuffled order.

`train_ways` > `ways` makes training tasks harder than test ones (Prototypical Networks trained on 60-way
episodes for every Omniglot test); the network's head then has `train_ways` outputs and a test task uses the
first `ways` of them, so only learners that read the head off the support set can train so
(`Algorithm.head_from_support`).

Splits (fixed, disjoint by character):
  split_by="alphabet"   train / test = the characters of two disjoint sets of alphabets. By default, train
                        = the alphabets of the first archive, test = the alphabets no earlier archive has
                        (small1 + small2: train Balinese, Early Aramaic, Greek, Korean, Latin; test Japanese
                        katakana, Sanskrit, Tagalog. Full archives: background 30 vs evaluation 20 alphabets).
  split_by="character"  all characters pooled, shuffled with `split_seed`, the first `train_characters` are
                        train, the rest test (the MAML paper: 1200 of the 1623 characters).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from envs.base import Split, TaskBatch, check_positive, check_split
from envs.omniglot_data import DRAWINGS_PER_CHARACTER, IMAGE_SIZE, OmniglotImages, load_archives
from envs.supervised import Data, SupervisedTaskDistribution

SMALL_ARCHIVES = ("images_background_small1", "images_background_small2")
SPLIT_BY = ("alphabet", "character")
ROTATIONS = 4


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    """A list of names, also from one comma-separated string (config files pass scalars)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


class OmniglotTasks(SupervisedTaskDistribution):
    """N-way classification tasks over Omniglot characters (with rotations as classes).

    `sample_support_query(tasks, k_support, k_query, ...)` takes shots *per class*: support x is
    (tasks, N * k_support, 1, 28, 28) float in [0, 1] (ink = 1), y is (tasks, N * k_support) long.
    """

    name = "Omniglot"
    loss = "cross_entropy"
    input_shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    input_range = (0.0, 1.0)
    prediction_range = (-100.0, 100.0)

    def __init__(
        self,
        ways: int = 5,
        train_ways: int = 0,
        archives: Sequence[str] | str = SMALL_ARCHIVES,
        split_by: str = "alphabet",
        train_alphabets: Sequence[str] | str | None = None,
        test_alphabets: Sequence[str] | str | None = None,
        train_characters: int = 1200,
        split_seed: int = 0,
        train_rotations: bool = True,
        test_rotations: bool = False,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        verify_checksums: bool = True,
        dtype: torch.dtype = torch.float32,
        data: OmniglotImages | None = None,
    ):
        check_positive(ways=ways)
        if train_ways < 0:
            raise ValueError(f"train_ways must be a positive number of classes (0: ways), got {train_ways}")
        if split_by not in SPLIT_BY:
            raise ValueError(f"unknown split_by {split_by!r}: expected one of {', '.join(SPLIT_BY)}")
        self.ways = int(ways)
        #: classes per task in each split: training tasks may have more than the test ones (train_ways)
        self.ways_of = {"train": int(train_ways or ways), "test": self.ways}
        self.output_dim = max(self.ways_of.values())
        self.task_classes_vary = len(set(self.ways_of.values())) > 1
        self.dtype = dtype
        archives, train_alphabets, test_alphabets = (_names(v) for v in (archives, train_alphabets, test_alphabets))
        self.data = data if data is not None else load_archives(archives, data_dir, cache_dir, verify_checksums)
        self.split_by = split_by
        chars = self._split_characters(list(archives), train_alphabets, test_alphabets, train_characters, split_seed)
        # Every character in 4 orientations: (characters, 4, 20, 28, 28), so a sample is one gather.
        imgs = self.data.images
        self.images = torch.stack([torch.rot90(imgs, r, dims=(-2, -1)) for r in range(ROTATIONS)], dim=1)
        rotations = {"train": train_rotations, "test": test_rotations}
        self.classes: dict[str, torch.Tensor] = {}
        for split in ("train", "test"):
            c = torch.as_tensor(chars[split], dtype=torch.long)
            turns = torch.arange(ROTATIONS if rotations[split] else 1)
            self.classes[split] = (c[:, None] * ROTATIONS + turns[None, :]).reshape(-1)
            if self.classes[split].numel() < self.ways_of[split]:
                name = "ways" if split == "test" or self.ways_of["train"] == self.ways else "train_ways"
                raise ValueError(f"the {split} split has {self.classes[split].numel()} classes, fewer than "
                                 f"{name}={self.ways_of[split]}")

    def _split_characters(self, archives, train_alphabets, test_alphabets, train_characters, split_seed) -> dict[str, list[int]]:
        alphabets = self.data.alphabets
        known = sorted(set(alphabets))
        if self.split_by == "character":
            n = len(alphabets)
            if not 0 < train_characters < n:
                raise ValueError(f"train_characters must be in 1..{n - 1} ({n} characters loaded), got {train_characters}")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
            chars = {"train": sorted(order[:train_characters]), "test": sorted(order[train_characters:])}
            self.alphabets = {s: sorted({alphabets[i] for i in c}) for s, c in chars.items()}
            return chars
        if train_alphabets is None:
            train_alphabets = sorted({a for a, src in zip(alphabets, self.data.archives) if src == archives[0]})
        if test_alphabets is None:
            test_alphabets = [a for a in known if a not in set(train_alphabets)]
        for a in [*train_alphabets, *test_alphabets]:
            if a not in known:
                raise KeyError(f"unknown alphabet {a!r}; loaded alphabets: {', '.join(known)}")
        both = set(train_alphabets) & set(test_alphabets)
        if both:
            raise ValueError(f"alphabets in both splits: {', '.join(sorted(both))}")
        self.alphabets = {"train": list(train_alphabets), "test": list(test_alphabets)}
        return {s: [i for i, a in enumerate(alphabets) if a in set(self.alphabets[s])] for s in ("train", "test")}

    def num_classes(self, split: Split = "train") -> int:
        check_split(split)
        return int(self.classes[split].numel())

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        """`n` tasks of N distinct classes each (N: the split's ways): {"classes": (n, N) long}, in random order
        (= label order)."""
        check_positive(tasks=n)
        check_split(split)
        pool = self.classes[split]
        # N distinct classes per task, batched: the first N of a random permutation (argsort of uniforms).
        picks = torch.rand(n, pool.numel(), generator=generator).argsort(dim=1)[:, : self.ways_of[split]]
        return {"classes": pool[picks]}

    def _gather(self, classes: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Images (tasks, N, S, 1, 28, 28) of drawings `draws` (tasks, N, S) of `classes` (tasks, N)."""
        char, turn = classes.div(ROTATIONS, rounding_mode="floor"), classes.remainder(ROTATIONS)
        img = self.images[char[..., None], turn[..., None], draws]
        return (img.to(self.dtype) / 255.0).unsqueeze(-3)

    def sample_support_query(
        self, tasks: TaskBatch, k_support: int, k_query: int, generator: torch.Generator, split: Split = "train"
    ) -> tuple[Data, Data]:
        check_positive(k_support=k_support, k_query=k_query)
        if k_support + k_query > DRAWINGS_PER_CHARACTER:
            raise ValueError(f"k_support + k_query = {k_support + k_query} exceeds the {DRAWINGS_PER_CHARACTER} drawings per character")
        classes = tasks["classes"]
        t, n = classes.shape
        draws = torch.rand(t, n, DRAWINGS_PER_CHARACTER, generator=generator).argsort(dim=-1)[..., : k_support + k_query]
        images = self._gather(classes, draws)
        labels = torch.arange(n).view(1, n, 1).expand(t, n, k_support + k_query)

        def part(lo: int, k: int) -> Data:
            x = images[:, :, lo : lo + k].reshape(t, n * k, *self.input_shape)
            y = labels[:, :, lo : lo + k].reshape(t, n * k)
            order = torch.rand(t, n * k, generator=generator).argsort(dim=1)  # shuffle examples within a task
            return x[torch.arange(t)[:, None], order], y.gather(1, order)

        return part(0, k_support), part(k_support, k_query)

    def sample_data(self, tasks: TaskBatch, k: int, generator: torch.Generator, split: Split = "train") -> Data:
        """k drawings per class of each task (distinct within this call)."""
        check_positive(k=k)
        classes = tasks["classes"]
        t, n = classes.shape
        draws = torch.rand(t, n, DRAWINGS_PER_CHARACTER, generator=generator).argsort(dim=-1)[..., :k]
        x = self._gather(classes, draws).reshape(t, n * k, *self.input_shape)
        y = torch.arange(n).repeat_interleave(k).expand(t, n * k).clone()
        return x, y

    def plot_adaptation(self, trace: dict):
        """One held-out task: its support set (a row per class) and query drawings framed green where the
        learner adapted for the most steps is right, red where wrong (trace: metarl.supervised.source.SupervisedSource)."""
        import matplotlib.pyplot as plt

        (sx, sy), (qx, qy) = (tuple(t[:1] for t in d) for d in (trace["support"], trace["query"]))
        steps = trace["steps"][-1]
        pred = trace["predict"](steps, qx)[0].argmax(-1)
        sx, sy, qx, qy = sx[0].float(), sy[0], qx[0].float(), qy[0]
        ways = int(sy.max()) + 1
        shots = sx.shape[0] // ways
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
        left.imshow(_mosaic(sx[torch.argsort(sy, stable=True)], cols=shots).numpy())
        left.set_yticks([(i + 0.5) * (sx.shape[-2] + 4) for i in range(ways)], [f"class {i}" for i in range(ways)])
        left.set_xticks([])
        left.set_title(f"support set ({ways}-way {shots}-shot)")
        q = min(30, qx.shape[0])
        right_ = pred[:q] == qy[:q]
        colours = torch.where(right_[:, None], torch.tensor([0.1, 0.7, 0.2]), torch.tensor([0.9, 0.1, 0.1]))
        right.imshow(_mosaic(qx[:q], cols=6, border=colours).numpy())
        right.axis("off")
        right.set_title(f"query after {steps} steps: {int(right_.sum())}/{q} right (green)")
        return fig


def _mosaic(images: torch.Tensor, cols: int, border: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 1, h, w) images in [0, 1] -> one RGB mosaic (rows * (h + 4), cols * (w + 4), 3), ink dark on white;
    `border` (n, 3) colours a 2-pixel frame around each image."""
    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    out = torch.ones(rows * (h + 4), cols * (w + 4), 3)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 4), c * (w + 4)
        if border is not None:
            out[y : y + h + 4, x : x + w + 4] = border[i]
        out[y + 2 : y + 2 + h, x + 2 : x + 2 + w] = 1 - images[i, 0, :, :, None].expand(h, w, 3)
    return out
