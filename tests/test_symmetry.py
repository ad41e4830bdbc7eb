"""Permutation symmetries (atlas.instruments._symmetry) and weight matching (atlas.instruments._rebasin)."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

from atlas._anatomy import Axis, mlp_projections, output_projection, qkv_projections, residual_axes
from atlas.instruments._rebasin import weight_matching
from atlas.instruments._symmetry import Permutation, Plan, logit_change, parameter_distance, permute, random_permutation

SAME_FUNCTION = 1e-4  # max |Δlogit| in float32 for one function (observed: ~1e-7, summation order)
CHANGED = 1e-3  # a wrong one moves them ten times further at least (observed: 2.7e-3 to 0.3 on the tiny models)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(5, 261, (3, 24), generator=torch.Generator().manual_seed(0))  # [B, T]


def _independent(model, seed=1):
    """A second random initialisation of the same config."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model.config).eval()


def _restore(permuted, original, params):
    """``permuted`` with some parameters put back as they were: a permutation applied to one side only."""
    names = {id(p): n for n, p in original.named_parameters()}
    with torch.no_grad():
        for p in params:
            permuted.get_parameter(names[id(p)]).copy_(p)
    return permuted


@pytest.mark.parametrize("residual", [False, True])
def test_permuted_model_is_the_same_function_far_away(tiny, ids, residual):
    model = tiny.model
    permuted = permute(model, random_permutation(model, seed=3, residual=residual))
    assert logit_change(model, permuted, ids) <= SAME_FUNCTION
    ratio = parameter_distance(model, permuted) / parameter_distance(model, _independent(model))
    # With the residual stream every random-init weight is shuffled: E‖W - σW‖² = E‖W - W'‖² for iid entries.
    # Without it the embeddings stay (about half the norm of these tiny models: 261 tokens + 1024 positions).
    assert (0.9 < ratio < 1.1) if residual else (0.4 < ratio < 0.9)


def test_the_original_is_not_changed(tiny_gpt2):
    before = {k: v.clone() for k, v in tiny_gpt2.model.state_dict().items()}
    permuted = permute(tiny_gpt2.model, random_permutation(tiny_gpt2.model, residual=True))
    assert all(torch.equal(before[k], v) for k, v in tiny_gpt2.model.state_dict().items())
    assert permuted.lm_head.weight is permuted.transformer.wte.weight  # still tied


def test_mlp_permuted_on_the_input_side_only_is_caught(tiny, ids):
    model = tiny.model
    permuted = permute(model, random_permutation(model, seed=3, heads=False))
    assert logit_change(model, permuted, ids) <= SAME_FUNCTION
    _, output = mlp_projections(model, 0)
    assert logit_change(model, _restore(permuted, model, [output.weight]), ids) > CHANGED


def test_heads_permuted_without_the_output_projection_are_caught(tiny, ids):
    model = tiny.model
    permuted = permute(model, random_permutation(model, seed=3, mlp=False))
    assert logit_change(model, permuted, ids) <= SAME_FUNCTION
    assert logit_change(model, _restore(permuted, model, [output_projection(model, 1).weight]), ids) > CHANGED


def test_residual_stream_permuted_without_the_queries_is_caught(tiny, ids):
    model = tiny.model
    permuted = permute(model, random_permutation(model, seed=3, mlp=False, heads=False, residual=True))
    assert logit_change(model, permuted, ids) <= SAME_FUNCTION
    query, _ = qkv_projections(model, 0)["q"]
    assert logit_change(model, _restore(permuted, model, [query.weight]), ids) > CHANGED


def test_grouped_query_heads_move_with_their_kv_head(ids):
    from atlas import load_model

    model = load_model("tiny-llama", device="cpu").model  # 4 query heads, 2 KV heads: groups {0, 1}, {2, 3}
    identity = Plan(model).identity()
    for heads in ([1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 0, 1]):  # within groups; groups swapped; both
        perm = replace(identity, heads=(np.array(heads), np.arange(4)))
        assert logit_change(model, permute(model, perm), ids) <= SAME_FUNCTION
    split = replace(identity, heads=(np.array([0, 2, 1, 3]), np.arange(4)))
    with pytest.raises(ValueError, match="split a KV group"):
        permute(model, split)
    # Applied anyway (query heads and output columns moved, the KV heads cannot follow): a different function.
    plan, broken = Plan(model), permute(model, identity)
    with torch.no_grad():
        for name, p in broken.named_parameters():
            p.copy_(plan.apply(name, p, split, skip=frozenset({("kv", 0)})))
    assert logit_change(model, broken, ids) > CHANGED


def test_permutations_compose_by_indexing(tiny_gpt2):
    """Applying σ then π is the permutation with units σ[π] (the module's convention)."""
    model = tiny_gpt2.model
    sigma, pi = (random_permutation(model, seed=s, residual=True) for s in (1, 2))
    both = Permutation(mlp=tuple(s[p] for s, p in zip(sigma.mlp, pi.mlp)),
                       heads=tuple(s[p] for s, p in zip(sigma.heads, pi.heads)), residual=sigma.residual[pi.residual])
    assert parameter_distance(permute(permute(model, sigma), pi), permute(model, both)) == 0.0  # index copies: exact


@pytest.mark.parametrize("config", [
    OPTConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, ffn_dim=48, word_embed_proj_dim=16,
              do_layer_norm_before=False, max_position_embeddings=64, vocab_size=100),  # project_in/out, post-norm
    LlamaConfig(num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, hidden_size=48,
                intermediate_size=40, attention_bias=True, max_position_embeddings=64, vocab_size=100),  # g = 3, biases
], ids=["opt-projected-post-norm", "llama-gqa3-bias"])
def test_other_layouts(config, ids):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases and norm weights, so that a missed one would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    ids = ids % 100
    permuted = permute(model, random_permutation(model, seed=5, residual=True))
    assert logit_change(model, permuted, ids) <= SAME_FUNCTION
    assert weight_matching(model, permuted).distance_after < 1e-9


def test_invalid_permutations_are_refused(tiny_gpt2):
    model = tiny_gpt2.model
    good = random_permutation(model)
    with pytest.raises(ValueError, match="layer 0 MLP: not a permutation of 0..127"):
        permute(model, replace(good, mlp=(np.zeros(128, int), good.mlp[1])))
    with pytest.raises(ValueError, match="2 layers"):
        permute(model, replace(good, heads=good.heads[:1]))
    with pytest.raises(ValueError, match="residual"):
        permute(model, replace(good, residual=np.arange(31)))


def test_residual_axes_cover_embeddings_norms_and_untied_head(tiny):
    model = tiny.model
    names = {id(p): n for n, p in model.named_parameters()}
    axes = set(residual_axes(model))
    assert Axis(names[id(model.get_input_embeddings().weight)], 1) in axes
    norms = [a for a in axes if "norm" in a.param or ".ln_" in a.param]
    assert len(norms) == (2 * 2 + 1) * (1 if tiny.name == "tiny-llama" else 2)  # 2 per layer + final; RMSNorm: no bias
    assert ("lm_head.weight" in {a.param for a in axes}) == (tiny.name == "tiny-llama")  # GPT-2, OPT: tied


# --- weight matching -------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [False, True])
def test_weight_matching_undoes_a_permutation_exactly(tiny, ids, residual):
    model = tiny.model
    sigma = random_permutation(model, seed=7, residual=residual)
    shuffled = permute(model, sigma)
    found = weight_matching(model, shuffled, residual=residual)
    assert found.converged and found.distance_before > 0.4 * parameter_distance(model, _independent(model))
    assert found.distance_after == 0.0  # the aligned weights are index copies of the original's
    assert (found.sweeps >= 2) if residual else (found.sweeps == 1)  # without the stream no family couples
    assert all(np.array_equal(s[p], np.arange(len(s))) for s, p in zip(sigma.mlp, found.permutation.mlp))
    assert all(np.array_equal(s[p], np.arange(len(s))) for s, p in zip(sigma.heads, found.permutation.heads))
    assert logit_change(shuffled, found.aligned, ids) <= SAME_FUNCTION


def test_without_the_residual_stream_a_shuffled_stream_is_not_undone(tiny_gpt2):
    model = tiny_gpt2.model
    shuffled = permute(model, random_permutation(model, seed=7, residual=True))
    blind = weight_matching(model, shuffled, residual=False)
    assert blind.distance_after > 0.5 * blind.distance_before


@hsettings(max_examples=4)
@given(seed=st.integers(0, 2**16))
def test_weight_matching_recovers_any_seeded_permutation(tiny_gpt2, seed):
    model = tiny_gpt2.model
    found = weight_matching(model, permute(model, random_permutation(model, seed=seed, residual=True)), seed=seed)
    assert found.distance_after == 0.0


def test_two_initialisations_get_closer_and_stay_the_same_function(tiny, ids):
    a, b = tiny.model, _independent(tiny.model)
    found = weight_matching(a, b)
    assert found.converged and found.distance_after < 0.99 * found.distance_before
    assert logit_change(b, found.aligned, ids) <= SAME_FUNCTION
    again = weight_matching(a, found.aligned)  # a local optimum: nothing left to improve
    assert again.sweeps == 1 and again.distance_after == found.distance_after


def test_grouped_query_heads_are_matched_exactly(ids):
    """Without the residual stream each layer's heads are one nested assignment: it must find the best of all
    group-preserving permutations (here 8 of the 24 orders of 4 heads in 2 KV groups), checked by brute force."""
    from atlas import load_model

    a = load_model("tiny-llama", device="cpu").model
    b = _independent(a)
    found = weight_matching(a, b, residual=False)
    plan = Plan(a)

    def group_preserving(order):
        try:
            plan.check(replace(plan.identity(), heads=(np.array(order),) * 2))
            return True
        except ValueError:
            return False

    valid = [np.array(order) for order in itertools.permutations(range(4)) if group_preserving(order)]
    assert len(valid) == 8
    for layer in range(2):
        def overlap(heads, layer=layer):  # Σ_W ⟨W_A, σ(W_B)⟩ with this layer's heads set to ``heads``
            perm = replace(found.permutation, heads=tuple(heads if l == layer else h
                                                          for l, h in enumerate(found.permutation.heads)))
            pb = dict(permute(b, perm).named_parameters())
            with torch.no_grad():
                return sum(float((p.double() * pb[n].double()).sum()) for n, p in a.named_parameters())

        assert np.array_equal(found.permutation.heads[layer], max(valid, key=overlap))


def test_weight_matching_refuses_different_architectures(tiny_gpt2):
    from atlas import load_model

    with pytest.raises(ValueError, match="same architecture"):
        weight_matching(tiny_gpt2.model, load_model("tiny-llama", device="cpu").model)


@pytest.mark.slow
def test_the_real_model_is_the_same_function_permuted_and_is_matched_back(smollm2):
    """SmolLM2-135M: 30 layers, 9 query heads in 3 KV groups. Float32 logits (|logit| up to ~34) differ by ~5e-5
    between 1 and 2 CPU threads alone, so the tolerance here is 5e-4, not the tiny models' 1e-4."""
    model = smollm2.model
    ids = torch.randint(0, 49152, (2, 64), generator=torch.Generator().manual_seed(0))
    sigma = random_permutation(model, seed=1)
    shuffled = permute(model, sigma)
    assert logit_change(model, shuffled, ids) <= 5e-4
    found = weight_matching(model, shuffled, residual=False)  # each layer's families solved once, then confirmed
    assert found.distance_before > 1000 and found.distance_after == 0.0
