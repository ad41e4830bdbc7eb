"""Models: the registry and loading, tiny models for tests, where the parts of a decoder live, and scoring.

**Loading.** ``load_model(name)`` takes a registry name (``MODELS``: ``smollm2-135m-instruct``, the offline
model; ``gpt2``, ``pythia-70m`` ...; ``tiny-gpt2``, ``tiny-opt``, ``tiny-llama``), a local Hugging Face
directory, a Lab run ``lab:RECIPE@SEED``, or a hub id, and returns a ``LoadedModel``: the model in eval
mode, its tokenizer, its document-start token, and the provenance a run records (revision, device, dtype,
``model_checksum``). A model that is not on this machine raises ``atlas.ModelUnavailable``.

**Tiny models.** ``tiny_model(architecture, width=1, ...)`` builds a seeded random model of a real
architecture with ``byte_tokenizer``: ``tiny_model("llama")`` has the weights of ``load_model("tiny-llama")``;
wider ones, other shapes or another attention implementation are arguments.

**Anatomy.** One place knows the module paths of GPT-2, OPT, Llama/Mistral and GPT-NeoX:
``decoder_layers``, ``attention``, ``output_projection`` (its input is the heads' outputs side by side,
``head_dim`` columns each), ``final_norm``. ``eager_attention`` switches to eager attention for a block
(attention maps, double backward); ``hooks`` attaches PyTorch hooks for a block and removes every one after
it, and ``hook_count`` counts what is attached.

**Scoring.** ``encode`` gives the token ids a model is fed (the document-start token first), ``batches``
right-pads them into masked batches of similar lengths, ``token_budget`` spreads a token budget over the
domains of a corpus, and ``token_nll`` scores every token given the ones before it.

    >>> import torch
    >>> from atlas.models import batches, decoder_layers, encode, hooks, tiny_model, token_nll
    >>> lm = tiny_model("gpt2")
    >>> outputs = []
    >>> keep = lambda module, args, output: outputs.append(output)
    >>> [(_, ids, mask)] = batches(encode(lm, ["The cat sat."], "prepend"), 8, lm.doc_start_id, "cpu")
    >>> with torch.no_grad(), hooks(*[(layer, "forward", keep) for layer in decoder_layers(lm.model)]):
    ...     nll = token_nll(lm.model, ids, mask)
    >>> tuple(nll.shape), len(outputs)
    ((1, 12), 2)
"""

from ._anatomy import (attention, decoder_layers, eager_attention, final_norm, head_dim, hook_count, hooks,
                       output_projection)
from ._models import LoadedModel, byte_tokenizer, load_model, model_checksum, tiny_model
from ._registry import MODELS, ModelSpec
from ._scoring import batches, encode, token_budget, token_nll

__all__ = ["MODELS", "LoadedModel", "ModelSpec", "attention", "batches", "byte_tokenizer", "decoder_layers",
           "eager_attention", "encode", "final_norm", "head_dim", "hook_count", "hooks", "load_model",
           "model_checksum", "output_projection", "tiny_model", "token_budget", "token_nll"]
