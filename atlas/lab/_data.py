"""The data of a recipe: its train / held-out split, its evaluation sets and its training stream.

Every example is a pair of aligned rows: ``input_ids`` and ``targets``, where
``targets[t]`` is the token the model must predict after reading positions 0..t
(``IGNORE`` where nothing is scored). One loss serves every kind: the mean
cross-entropy over scored positions.

Modular addition (Power et al. 2022; Nanda et al. 2023). Every pair (a, b) of
Z_p x Z_p is one example: inputs ``[a, b, =]`` (token ids a, b and p), target
``(a + b) mod p`` at the last position only. A fixed random ``train_fraction`` of
the p² pairs (``split_seed``) trains; the rest is held out.

Corpus LM and finetune. Each domain's passages are ordered by SHA-256 of
``"<split_seed>:<passage id>"`` and the first ``round(train_fraction * n)`` train;
the rest is held out, so a passage's side depends on its id alone (not on the file
order or the other passages), and every domain is split in the same proportion.
A passage is encoded as the model's document-start token followed by its text
tokens and cut into windows of ``window`` tokens that overlap by one, so every
token after the first is a target exactly once.

The training stream draws batches from successive random permutations (epochs) of
the training windows, with a generator seeded by the run's seed: a fixed order.
Curriculum ``shuffled`` draws from all training domains at once; a domain order
``[A, B]`` cuts the steps into equal phases and phase i draws from domain i only.
Full batch (modular addition, ``batch: full``) is every training pair at every step.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from .._corpus import Corpus, load_corpus
from .._errors import LabError
from .._public import public
from ._model import tokenizer_for
from ._recipe import CorpusData, ModularData, Recipe

__all__ = ["IGNORE", "Batch", "CorpusTask", "ModularTask", "build_task", "split_passages", "training_batches"]

IGNORE = -100  # a target that is not scored (torch.nn.functional.cross_entropy's ignore_index)
EVAL_BATCH = 8  # windows per forward pass when a corpus is evaluated (logits of a 49k vocabulary: 200 MB)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, T], IGNORE where unscored
    sources: tuple[str, ...]  # per row: "a+b" (modular) or the passage id
    domains: tuple[str, ...] | None = None  # per row, corpus tasks only

    def to(self, device: str | torch.device) -> Batch:
        return replace(self, input_ids=self.input_ids.to(device), targets=self.targets.to(device))


class ModularTask:
    """All p² pairs, split once by ``split_seed`` into training and held-out pairs."""

    def __init__(self, data: ModularData):
        p = data.p
        self.p = p
        a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")  # [p, p] each
        self.inputs = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)  # [p², 3]
        self.answers = (self.inputs[:, 0] + self.inputs[:, 1]) % p  # [p²]
        order = torch.randperm(p * p, generator=torch.Generator().manual_seed(data.split_seed))
        n_train = round(data.train_fraction * p * p)
        if not 0 < n_train < p * p:
            raise LabError(f"data.train_fraction {data.train_fraction} of {p * p} pairs leaves no training or no "
                           "held-out pair; choose a fraction between them")
        self.train_idx = order[:n_train].sort().values  # [n_train], pair index a * p + b
        self.heldout_idx = order[n_train:].sort().values  # [p² - n_train]
        self.data = data

    def batch(self, idx: torch.Tensor) -> Batch:
        targets = torch.full((len(idx), 3), IGNORE)
        targets[:, -1] = self.answers[idx]
        pairs = self.inputs[idx]
        return Batch(pairs.clone(), targets, tuple(f"{a}+{b}" for a, b, _ in pairs.tolist()))

    def eval_sets(self) -> dict[str, list[Batch]]:
        return {"train": [self.batch(self.train_idx)], "heldout": [self.batch(self.heldout_idx)]}

    def stream(self, batch: int | None, steps: int, seed: int) -> Iterator[Batch]:
        if batch is None:  # full batch: the same examples at every step
            full = self.batch(self.train_idx)
            return itertools.repeat(full, steps)
        draws = _epochs(self.train_idx, torch.Generator().manual_seed(seed))
        return (self.batch(torch.stack([next(draws) for _ in range(batch)])) for _ in range(steps))

    def describe(self) -> dict:
        digest = hashlib.sha256(",".join(map(str, self.train_idx.tolist())).encode()).hexdigest()
        return {"task": "modular_addition", "p": self.p, "train_fraction": self.data.train_fraction,
                "split_seed": self.data.split_seed, "n_train": len(self.train_idx),
                "n_heldout": len(self.heldout_idx), "train_pairs_sha256": digest,
                "example": "inputs [a, b, =] as token ids a, b, p; target (a + b) mod p at the last position"}


def split_passages(corpus: Corpus, domains: tuple[str, ...] | None, train_fraction: float, split_seed: int
                   ) -> tuple[Corpus, Corpus]:
    """(training passages, held-out passages) of the chosen domains, each in file order."""
    chosen = list(domains) if domains is not None else corpus.domains
    unknown = [d for d in chosen if d not in corpus.domains]
    if unknown:
        raise LabError(f"data.domains: corpus {corpus.name!r} has no domain {', '.join(map(repr, unknown))} "
                       f"(its domains: {', '.join(corpus.domains)})")
    train_ids: set[str] = set()
    for domain in chosen:
        passages = [p for p in corpus.passages if p.domain == domain]
        n_train = round(train_fraction * len(passages))
        if not 0 < n_train < len(passages):
            raise LabError(f"data.train_fraction {train_fraction}: domain {domain!r} has {len(passages)} passages, "
                           "so the split leaves one side empty; choose a fraction that keeps both")
        ranked = sorted(passages, key=lambda p: hashlib.sha256(f"{split_seed}:{p.id}".encode()).hexdigest())
        train_ids.update(p.id for p in ranked[:n_train])
    kept = [p for p in corpus.passages if p.domain in chosen]
    return (Corpus(corpus.name + "[train]", tuple(p for p in kept if p.id in train_ids)),
            Corpus(corpus.name + "[heldout]", tuple(p for p in kept if p.id not in train_ids)))


class CorpusTask:
    """A corpus split into training and held-out passages, encoded into windows for one tokenizer."""

    def __init__(self, data: CorpusData, tokenizer, doc_start_id: int, pad_id: int):
        self.data, self.pad_id = data, pad_id
        self.corpus = load_corpus(data.corpus)
        self.train, self.heldout = split_passages(self.corpus, data.domains, data.train_fraction, data.split_seed)
        self.domains = list(data.curriculum) if isinstance(data.curriculum, tuple) else self.train.domains
        self.train_windows = self._windows(self.train, tokenizer, doc_start_id)
        self.heldout_windows = self._windows(self.heldout, tokenizer, doc_start_id)

    def _windows(self, corpus: Corpus, tokenizer, doc_start_id: int) -> list[tuple[list[int], str, str]]:
        w = self.data.window
        out = []
        for p in corpus.passages:
            ids = [doc_start_id] + tokenizer(p.text, add_special_tokens=False).input_ids
            out.extend((ids[k:k + w], p.id, p.domain) for k in range(0, len(ids) - 1, w - 1))
        return out

    def _batch(self, windows: list[tuple[list[int], str, str]]) -> Batch:
        w = self.data.window
        input_ids = torch.full((len(windows), w), self.pad_id)  # [B, T]
        targets = torch.full((len(windows), w), IGNORE)  # [B, T]
        for row, (ids, _, _) in enumerate(windows):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            targets[row, :len(ids) - 1] = torch.tensor(ids[1:])
        return Batch(input_ids, targets, tuple(s for _, s, _ in windows), tuple(d for _, _, d in windows))

    def eval_sets(self) -> dict[str, list[Batch]]:
        return {name: [self._batch(windows[i:i + EVAL_BATCH]) for i in range(0, len(windows), EVAL_BATCH)]
                for name, windows in (("train", self.train_windows), ("heldout", self.heldout_windows))}

    def phases(self, steps: int) -> list[tuple[int, int, str | None]]:
        """(first step, end step, domain) of each curriculum phase; domain None: all training domains."""
        if self.data.curriculum == "shuffled":
            return [(0, steps, None)]
        k = len(self.domains)
        if steps < k:
            raise LabError(f"steps ({steps}) is fewer than the curriculum's {k} phases; train at least {k} steps")
        return [(i * steps // k, (i + 1) * steps // k, d) for i, d in enumerate(self.domains)]

    def stream(self, batch: int, steps: int, seed: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(seed)
        for start, end, domain in self.phases(steps):
            pool = [i for i, (_, _, d) in enumerate(self.train_windows) if domain is None or d == domain]
            draws = _epochs(torch.tensor(pool), generator)
            for _ in range(start, end):
                yield self._batch([self.train_windows[int(next(draws))] for _ in range(batch)])

    def describe(self) -> dict:
        source = self.data.corpus
        return {"task": "corpus", "corpus": self.corpus.name, "corpus_path": source,
                "corpus_hash": self.corpus.hash, "domains": self.train.domains,
                "curriculum": self.data.curriculum if isinstance(self.data.curriculum, str)
                else list(self.data.curriculum),
                "train_fraction": self.data.train_fraction, "split_seed": self.data.split_seed,
                "window": self.data.window, "n_train_windows": len(self.train_windows),
                "n_heldout_windows": len(self.heldout_windows),
                "train_ids": [p.id for p in self.train.passages],
                "heldout_ids": [p.id for p in self.heldout.passages],
                "split": "per domain, passages ordered by sha256('<split_seed>:<id>'); the first "
                         "round(train_fraction * n) train, the rest are held out"}


def _epochs(pool: torch.Tensor, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Elements of ``pool`` in successive random permutations, without end."""
    while True:
        yield from pool[torch.randperm(len(pool), generator=generator)]


def build_task(recipe: Recipe, tokenizer=None, doc_start_id: int | None = None, pad_id: int | None = None):
    """The task of a recipe; corpus tasks need the tokenizer, document-start and padding ids of the model."""
    if isinstance(recipe.data, ModularData):
        return ModularTask(recipe.data)
    return CorpusTask(recipe.data, tokenizer, doc_start_id, pad_id)


def training_batches(recipe: Recipe, seed: int) -> Iterator[Batch]:
    """The batches a run of ``recipe`` with ``seed`` trains on, one per step, in order."""
    tokenizer, doc_start_id, pad_id = tokenizer_for(recipe)
    return build_task(recipe, tokenizer, doc_start_id, pad_id).stream(recipe.batch, recipe.steps, seed)


public("atlas.lab", Batch)
