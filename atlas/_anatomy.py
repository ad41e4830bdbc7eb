"""Where the parts of a decoder live in each supported architecture.

Instruments reach into attention layers (maps, head gates, per-block Hessians);
this module is the one place that knows the module paths of GPT-2, OPT,
Llama/Mistral (and GPT-NeoX/Pythia) layouts.

    layer i           attention module        its output projection   MLP
    GPT-2             transformer.h[i].attn   .c_proj (Conv1D)        transformer.h[i].mlp
    OPT               model.decoder.layers[i].self_attn  .out_proj     .fc1/.fc2 (on the layer)
    Llama / Mistral   model.layers[i].self_attn          .o_proj       model.layers[i].mlp
    GPT-NeoX          gpt_neox.layers[i].attention       .dense        gpt_neox.layers[i].mlp

The input of the output projection is the heads' outputs concatenated:
[B, T, n_heads * head_dim], head h in columns h*head_dim:(h+1)*head_dim.
"""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from ._errors import BadInput

__all__ = ["attention", "attention_params", "decoder_layers", "eager_attention", "final_norm", "head_dim",
           "kv_groups", "mlp_params", "output_projection"]


def _first_path(model: nn.Module, paths: tuple[str, ...]) -> nn.Module | None:
    """The module at the first dotted attribute path that exists in ``model``."""
    for path in paths:
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    return None


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    layers = _first_path(model, ("transformer.h", "model.decoder.layers", "model.layers", "gpt_neox.layers"))
    if layers is not None:
        return list(layers)
    raise BadInput(f"unsupported architecture {type(model).__name__}: Atlas knows GPT-2, OPT, Llama/Mistral "
                     "and GPT-NeoX layouts (see atlas._anatomy)")


def final_norm(model: nn.Module) -> nn.Module:
    """What maps the last decoder layer's output to the input of ``model.get_output_embeddings()``.

    GPT-2 ``transformer.ln_f``; OPT ``model.decoder.final_layer_norm`` then ``project_out``
    (each may be absent); Llama/Mistral ``model.norm``; GPT-NeoX ``gpt_neox.final_layer_norm``.
    A new ``nn.Sequential`` over the model's own modules: the model is not changed."""
    norm = _first_path(model, ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm"))
    if norm is not None:
        return norm
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    if decoder is not None and hasattr(decoder, "final_layer_norm"):
        return nn.Sequential(*[m for m in (decoder.final_layer_norm, getattr(decoder, "project_out", None))
                               if m is not None])
    raise BadInput(f"unsupported architecture {type(model).__name__}: no final norm found (see atlas._anatomy)")


def attention(model: nn.Module, layer: int) -> nn.Module:
    block = decoder_layers(model)[layer]
    for name in ("attn", "self_attn", "attention"):
        if hasattr(block, name):
            return getattr(block, name)
    raise BadInput(f"layer {layer} of {type(model).__name__} has no attention module")


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    attn = attention(model, layer)
    for name in ("c_proj", "out_proj", "o_proj", "dense"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise BadInput(f"layer {layer}: attention module {type(attn).__name__} has no output projection")


def head_dim(model: nn.Module) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_groups(model: nn.Module) -> int:
    """Query heads per key/value head: 1 for multi-head attention, >1 for grouped-query attention.

    Query head h reads KV head h // kv_groups(model)."""
    config = model.config
    return config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def attention_params(model: nn.Module, layer: int) -> list[nn.Parameter]:
    return list(attention(model, layer).parameters())


def mlp_params(model: nn.Module, layer: int) -> list[nn.Parameter]:
    block = decoder_layers(model)[layer]
    if hasattr(block, "mlp"):
        return list(block.mlp.parameters())
    return [p for name in ("fc1", "fc2") for p in getattr(block, name).parameters()]  # OPT


@contextmanager
def eager_attention(model: nn.Module):
    """Switch to eager attention for the block (attention maps, double backward), then restore.

    SDPA returns no attention weights and has no double backward."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before != "eager":
            model.set_attn_implementation(before)

