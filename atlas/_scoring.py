"""Token-level scoring shared by the instruments: encode passages, batch them, score every token.

BOS policy -- what a passage's first text token is conditioned on:

* ``prepend`` (default): the model's document-start token (registry setting, see
  ``atlas._models``) is given as context, so every text token is scored;
* ``none``: the text alone; its first token is unscored, as with
  ``GPT2LMHeadModel(labels=ids)`` (the seed's likely method).

Batches are right-padded and masked. Positions are unaffected by right padding, so
a passage gets the same numbers whatever it is batched with (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ._corpus import Corpus, Passage
from ._errors import BadInput, SettingsError
from ._models import LoadedModel
from ._public import public

__all__ = ["BOS_POLICIES", "batches", "budgeted", "encode", "token_budget", "token_nll"]

BOS_POLICIES = ("prepend", "none")


def encode(lm: LoadedModel, texts: Sequence[str], bos_policy: str) -> list[list[int]]:
    """Token ids a model is fed for each text (the document-start token first under ``prepend``)."""
    if bos_policy not in BOS_POLICIES:
        raise SettingsError(f"unknown BOS policy {bos_policy!r}: use one of {', '.join(BOS_POLICIES)}")
    limit = _context_length(lm.model.config)
    out = []
    for text in texts:
        ids = lm.tokenizer(text, add_special_tokens=False).input_ids
        if bos_policy == "prepend":
            ids = [lm.doc_start_id] + ids
        if len(ids) < 2:
            raise BadInput(f"text {text[:40]!r} has too few tokens to score under BOS policy {bos_policy!r}")
        if limit is not None and len(ids) > limit:
            raise BadInput(f"text {text[:40]!r}... has {len(ids)} tokens, more than {lm.name}'s context of {limit}; "
                             "split long passages before scoring")
        out.append(ids)
    return out


def token_budget(lm: LoadedModel, corpus: Corpus, max_tokens: int, per_passage: int = 0
                 ) -> list[list[int]]:
    """The token ids of ``budgeted``'s passages."""
    return [ids for _, ids in budgeted(lm, corpus, max_tokens, per_passage)]


def budgeted(lm: LoadedModel, corpus: Corpus, max_tokens: int, per_passage: int = 0
             ) -> list[tuple[Passage, list[int]]]:
    """Token ids (BOS policy ``prepend``) of passages, domains taking turns, until exactly ``max_tokens``
    tokens are scored or the corpus runs out; the last passage is cut short to fit. ``per_passage`` > 0
    scores at most that many tokens of each passage (its opening), so that a small budget still spreads
    over many passages -- the units a bootstrap resamples -- and over every domain.

    For instruments whose cost grows with tokens (ablation, Hessian, interpolation): a budget spans
    every domain of the corpus even when the file is sorted by domain."""
    if max_tokens < 1 or per_passage < 0:
        raise SettingsError(f"max_tokens must be at least 1 and tokens_per_passage at least 0 (0: whole "
                            f"passages), not {max_tokens} and {per_passage}")
    out, left = [], max_tokens
    for passage in corpus.round_robin():
        if left == 0:
            break
        ids = encode(lm, [passage.text], "prepend")[0][: min(left, per_passage or left) + 1]
        out.append((passage, ids))
        left -= len(ids) - 1
    return out


def batches(encoded: Sequence[list[int]], batch_size: int, pad_id: int, device: str, max_padding: float = 1.0
            ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Yield (indices, input_ids [B, T], attention_mask [B, T]), grouping similar lengths to save padding.

    Passages go in order of length, ``batch_size`` at most to a batch; a batch also closes early rather than
    let padding exceed ``max_padding`` of its positions (1.0, the default: never early)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"batch_size (--batch-size) must be a whole number of passages, at least 1, "
                            f"not {batch_size!r}")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    groups: list[list[int]] = []
    for i in order:  # ascending: each passage is the longest of its batch so far
        last = groups[-1] if groups else []
        real = sum(len(encoded[j]) for j in last) + len(encoded[i])
        if not last or len(last) == batch_size or 1 - real / (len(encoded[i]) * (len(last) + 1)) > max_padding:
            groups.append([i])
        else:
            last.append(i)
    for idx in groups:
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        yield idx, ids.to(device), mask.to(device)


def token_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of each token given the ones before it.

    input_ids, attention_mask: [B, T]  ->  nll: [B, T-1], float32, 0 at padding.
    Differentiable: the gradient and Hessian instruments call it with grad enabled.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, T, V]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]
    targets = input_ids[:, 1:].unsqueeze(-1)  # [B, T-1, 1]
    nll = -logp.gather(-1, targets).squeeze(-1)  # [B, T-1]
    return nll * attention_mask[:, 1:]


def _context_length(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    return None


public("atlas.models", batches, encode, token_budget, token_nll)
