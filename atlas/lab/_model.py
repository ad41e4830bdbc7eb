"""The model a recipe starts from: a fresh GPT-2 or Llama shape, or an Atlas model to fine-tune.

Fresh models are built by transformers from a config (``AutoModelForCausalLM.from_config``)
after ``torch.manual_seed(seed)``, so the initial weights are a function of the seed; every
dropout is 0, so a training step uses no randomness. Their tokenizers are built offline:

* modular addition: a word-level tokenizer whose ids are the numbers themselves --
  ``"0" .. "p-1"`` are ids 0..p-1 and ``"="`` is id p -- then ``<s>``, ``</s>``, ``<pad>``
  and ``<unk>``; ``tokenizer("3 5 =")`` gives ``[3, 5, p]`` and ``W_E[:p]`` is the
  embedding of Z_p, the matrix whose Fourier spectrum Nanda et al. (2023) read;
* corpus LM: Atlas's byte-level tokenizer (``atlas.models.byte_tokenizer``: 256 byte
  tokens and the specials of the GPT-2, OPT and Llama layouts), document start ``<s>``.

Both declare ``<s>`` as BOS, which is what ``atlas.load_model`` picks as the
document-start token of a checkpoint directory (tokenizer BOS, then EOS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._models import byte_tokenizer, load_model
from ._recipe import Architecture, ModularData, Recipe

__all__ = ["Start", "build_model", "initial_model", "modular_tokenizer", "tokenizer_for"]


def modular_tokenizer(p: int):
    """Word-level tokenizer over ``0..p-1`` and ``=`` (ids equal to the numbers, ``=`` = p) plus specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [str(i) for i in range(p)] + ["=", "<s>", "</s>", "<pad>", "<unk>"]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def build_model(arch: Architecture, tokenizer, seed: int):
    """A randomly initialised causal LM of the recipe's shape, its weights fixed by ``seed``."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, initializer_range=arch.init_std)
    if arch.shape == "gpt2":
        config = GPT2Config(n_layer=arch.layers, n_head=arch.heads, n_embd=arch.d_model, n_inner=arch.d_mlp,
                            n_positions=arch.context, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    else:
        config = LlamaConfig(num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
                             num_key_value_heads=arch.kv_heads, hidden_size=arch.d_model,
                             intermediate_size=arch.d_mlp, max_position_embeddings=arch.context,
                             attention_dropout=0.0, tie_word_embeddings=False, **common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tokenizer_for(recipe: Recipe) -> tuple[object, int, int]:
    """(tokenizer, document-start id, padding id) of the recipe's model."""
    if recipe.kind == "finetune":
        start = initial_model(recipe, recipe.seed)
        return start.tokenizer, start.doc_start_id, start.pad_id
    tok = modular_tokenizer(recipe.data.p) if isinstance(recipe.data, ModularData) else byte_tokenizer()
    return tok, tok.bos_token_id, tok.pad_token_id


@dataclass
class Start:
    """The model before the first step, with what its checkpoints must carry."""

    model: torch.nn.Module
    tokenizer: object
    doc_start_id: int
    doc_start_token: str
    pad_id: int
    revision: str  # "random-init seed=S" or the init model's revision


def initial_model(recipe: Recipe, seed: int) -> Start:
    """Step 0 of a run: a fresh model (weights from ``seed``) or the finetune's ``init`` model in float32 on CPU.

    A fine-tuned copy keeps its init model's document-start token: its saved tokenizer declares that
    token as BOS, so ``atlas.load_model`` on a checkpoint scores passages as it does the init model
    (SmolLM2's file declares the chat marker ``<|im_start|>`` as BOS; Atlas's registry uses ``<|endoftext|>``).
    """
    if recipe.kind == "finetune":
        lm = load_model(recipe.data.init, device="cpu", dtype="float32")
        tok = lm.tokenizer
        tok.bos_token = lm.doc_start_token
        pad = tok.pad_token_id if tok.pad_token_id is not None else lm.doc_start_id
        return Start(lm.model, tok, lm.doc_start_id, lm.doc_start_token, pad, f"{lm.name}@{lm.revision}")
    tok, doc_start, pad = tokenizer_for(recipe)
    return Start(build_model(recipe.architecture, tok, seed), tok, doc_start, tok.bos_token, pad,
                 f"random-init seed={seed}")
