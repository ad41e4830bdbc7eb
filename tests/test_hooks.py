"""``atlas._anatomy.hooks``: the one owner of hooks on a model -- added for a block, removed on every way out."""

import copy
import doctest

import pytest
import torch
from torch import nn

from atlas._anatomy import decoder_layers, eager_attention, hook_count, hooks
from atlas._errors import BadInput
from atlas.instruments._cka import layer_representations
from atlas.instruments.coupling import _attention_maps


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))


def test_each_kind_acts_inside_the_block_and_is_gone_after():
    model, x, seen = net(), torch.ones(2, 3), []
    first, second = model
    plain = model(x)
    specs = [(first, "forward_pre", lambda m, args: (args[0] * 0,)),  # the first layer reads zeros
             (first, "forward_pre_kwargs", lambda m, args, kwargs: seen.append(("kwargs", args[0].sum().item()))),
             (second, "forward", lambda m, args, out: out + 10),
             (second, "backward", lambda m, grad_in, grad_out: seen.append(("backward", grad_out[0].shape)))]
    with hooks(*specs):
        assert hook_count(model) == 4
        hooked = model(x)
        hooked.sum().backward()
    assert torch.allclose(hooked, model(torch.zeros(2, 3)) + 10)
    assert seen == [("kwargs", 0.0), ("backward", torch.Size([2, 1]))]  # hooks on one module run in order given
    assert hook_count(model) == 0 and torch.equal(model(x), plain)


def test_an_exception_in_the_block_removes_every_hook_and_propagates():
    model = net()
    with pytest.raises(KeyError, match="inside"), hooks(*[(m, "forward", lambda *a: None) for m in model]):
        assert hook_count(model) == 2
        raise KeyError("inside")
    assert hook_count(model) == 0


@pytest.mark.parametrize("bad, error", [((None, "forward", print), AttributeError),  # not a module
                                        ((nn.Linear(1, 1), "sideways", print), BadInput)])
def test_a_hook_that_cannot_be_added_leaves_none_of_those_added_before(bad, error):
    model = net()
    with pytest.raises(error), hooks((model[0], "forward", print), bad, (model[1], "forward", print)):
        pytest.fail("the block must not run")
    assert hook_count(model) == 0


def test_hook_count_counts_hooks_added_elsewhere_too():
    model = net()
    handles = [model[0].register_forward_hook(print), model[1].register_full_backward_pre_hook(print)]
    assert hook_count(model) == 2
    for h in handles:
        h.remove()
    assert hook_count(model) == 0


def test_the_docstring_example_runs():
    import atlas._anatomy

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    (test,) = finder.find(atlas._anatomy.hooks, globs=vars(atlas._anatomy))
    assert test.examples and runner.run(test).failed == 0


def test_attention_maps_are_what_output_attentions_returns(tiny):
    """An instrument site: the coupling instrument's maps, against transformers' own (on a copy, which its
    capturing hooks may stay on)."""
    ids = torch.randint(5, 200, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    reference = copy.deepcopy(tiny.model)
    with torch.no_grad(), eager_attention(tiny.model), eager_attention(reference):
        maps = _attention_maps(tiny.model, ids, mask)  # [B, L, H, T, T]
        expected = reference(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert torch.equal(maps, torch.stack(expected, dim=1))
    assert hook_count(tiny.model) == 0


def test_an_instrument_that_fails_mid_forward_leaves_no_hook(tiny_gpt2):
    model = tiny_gpt2.model
    out_of_vocabulary = torch.full((1, 4), model.config.vocab_size + 5)
    with pytest.raises(IndexError):
        layer_representations(model, out_of_vocabulary)
    assert hook_count(model) == 0 and len(decoder_layers(model)) == 2
