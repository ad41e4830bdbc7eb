"""Reference computations written independently of the instruments, for their tests (small models:
``atlas.models.tiny_model``)."""

import numpy as np
import torch
import torch.nn.functional as F

from atlas import Corpus, LoadedModel, Passage

#: Short passages in two domains: a batch of three, padded (lengths 13, 30, 13 with the document start).
SHORT = Corpus("short", (Passage("a", "d1", "The cat sat."), Passage("b", "d1", "Tea at noon."),
                         Passage("c", "d2", "Una casa blanca en la colina.")))


def dense_hessian(lm: LoadedModel, names: list[str], passages: Corpus) -> np.ndarray:
    """The Hessian [n, n] (float64, symmetrised) of the mean NLL per text token w.r.t. the named parameters,
    flattened in the order given, by torch.autograd.functional.hessian: each passage run alone (no padding),
    cross-entropy summed over every text token, divided by all tokens."""
    named = dict(lm.model.named_parameters())
    params = [named[n] for n in names]
    sizes = [p.numel() for p in params]
    seqs = [torch.tensor([[lm.doc_start_id] + lm.tokenizer(p.text, add_special_tokens=False).input_ids])
            for p in passages.passages]

    def loss(flat):
        values = {n: x.view_as(p) for n, x, p in zip(names, torch.split(flat, sizes), params)}
        total = sum(F.cross_entropy(torch.func.functional_call(lm.model, values, (ids,)).logits[0, :-1], ids[0, 1:],
                                    reduction="sum") for ids in seqs)
        return total / sum(ids.shape[1] - 1 for ids in seqs)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    H = torch.autograd.functional.hessian(loss, flat, vectorize=True).detach().double().numpy()
    return (H + H.T) / 2
