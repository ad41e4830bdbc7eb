"""Small models and reference computations written independently of the instruments, for their tests."""

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from atlas import Corpus, LoadedModel, Passage
from atlas._models import _byte_tokenizer

#: Short passages in two domains: a batch of three, padded (lengths 13, 30, 13 with the document start).
SHORT = Corpus("short", (Passage("a", "d1", "The cat sat."), Passage("b", "d1", "Tea at noon."),
                         Passage("c", "d2", "Una casa blanca en la colina.")))


def micro_model(name: str, config_class, **config) -> LoadedModel:
    """A model of ``config_class(**config)`` with the byte tokenizer, eager attention and weights seeded 0:
    small enough that its Hessian can be formed."""
    tok = _byte_tokenizer()
    config = config_class(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, **config)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    token = "<|endoftext|>"
    return LoadedModel(name, model, tok, tok.get_vocab()[token], token, "registry", "random-init seed=0",
                       "cpu", "float32")


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
