import copy

import pandas as pd
import pytest
import torch

from atlas import load_model, run_instrument, validate_table
from atlas._cisp import model_checksum
from atlas._scoring import batches, encode, token_nll
from atlas.instruments import interpolation_barrier, measure_interpolation, measure_perplexity

ALL = 10**6  # a token budget that takes every passage


@pytest.fixture(scope="module")
def small(starter):
    return starter.sample(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, small):
    """tiny-gpt2 (A) and a copy fine-tuned by a few Adam steps on ``small`` (B), both saved with their tokenizer."""
    lm = load_model("tiny-gpt2", device="cpu")
    tuned = copy.deepcopy(lm.model)
    optimiser = torch.optim.Adam(tuned.parameters(), lr=1e-2)
    encoded = encode(lm, [p.text for p in small.passages], "prepend")
    for _ in range(4):
        for _, ids, mask in batches(encoded, 4, lm.doc_start_id, "cpu"):
            optimiser.zero_grad()
            (token_nll(tuned, ids, mask).sum() / mask[:, 1:].sum()).backward()
            optimiser.step()
    dirs = {}
    for name, model in (("a", lm.model), ("b", tuned)):
        dirs[name] = tmp_path_factory.mktemp(f"checkpoint-{name}")
        model.save_pretrained(dirs[name])
        lm.tokenizer.save_pretrained(dirs[name])
    return str(dirs["a"]), str(dirs["b"])


@pytest.fixture(scope="module")
def model_a(checkpoints):
    return load_model(checkpoints[0], device="cpu")


def _pooled_loss(lm, corpus) -> float:
    """The perplexity instrument's token-weighted mean NLL: the log of its pooled perplexity."""
    table = measure_perplexity(lm, corpus, progress=False)["perplexity"]
    return float(table["nll_sum"].sum() / table["n_tokens"].sum())


def test_endpoints_are_each_checkpoints_own_loss(model_a, checkpoints, small):
    table = measure_interpolation(model_a, small, other=load_model(checkpoints[1], device="cpu"), points=3, max_tokens=ALL, progress=False)["interpolation"]
    loss_a, loss_b = _pooled_loss(model_a, small), _pooled_loss(load_model(checkpoints[1], device="cpu"), small)
    assert loss_b < loss_a - 0.1  # B was fine-tuned on these passages: the two ends differ
    assert table["loss"].iloc[0] == pytest.approx(loss_a, rel=1e-5)
    assert table["loss"].iloc[-1] == pytest.approx(loss_b, rel=1e-5)
    assert list(table["t"]) == [0.0, 0.5, 1.0]
    assert list(table["linear"]) == pytest.approx([loss_a, (loss_a + loss_b) / 2, loss_b], rel=1e-5)
    assert list(table["excess"]) == pytest.approx(list(table["loss"] - table["linear"]), abs=1e-12)
    assert (table["n_tokens"] == measure_perplexity(model_a, small, progress=False)["perplexity"]["n_tokens"].sum()).all()


def test_midpoint_is_the_loss_of_the_averaged_weights(model_a, checkpoints, small):
    table = measure_interpolation(model_a, small, other=load_model(checkpoints[1], device="cpu"), points=3, max_tokens=ALL, progress=False)["interpolation"]
    b = load_model(checkpoints[1], device="cpu").model.state_dict()
    mid = copy.deepcopy(model_a)
    mid.model.load_state_dict({k: (v + b[k]) / 2 if v.is_floating_point() else v
                               for k, v in model_a.model.state_dict().items()})
    assert table["loss"].iloc[1] == pytest.approx(_pooled_loss(mid, small), rel=1e-5)


def test_a_model_interpolated_with_itself_is_flat(model_a, checkpoints, small):
    table = measure_interpolation(model_a, small, other=load_model(checkpoints[0], device="cpu"), points=5, max_tokens=ALL, progress=False)["interpolation"]
    assert list(table["loss"]) == pytest.approx([table["loss"].iloc[0]] * 5, rel=1e-6)
    assert list(interpolation_barrier(table)["barrier"]) == pytest.approx([0, 0], abs=1e-6)


def test_barrier_definitions_on_a_hand_made_table():
    t = [0.0, 0.25, 0.5, 0.75, 1.0]
    loss = [4.0, 3.9, 3.0, 1.5, 1.0]  # linear = 4 - 3t = [4, 3.25, 2.5, 1.75, 1]
    table = pd.DataFrame({"t": t, "loss": loss, "linear": 0.0, "excess": 0.0, "n_tokens": 10}).iloc[::-1]
    barrier = interpolation_barrier(table, n_resamples=0, seed=0).set_index("definition")
    validate_table("interpolation_barrier", barrier.reset_index())
    assert barrier.loc["max_minus_mean_endpoints", "barrier"] == pytest.approx(4.0 - 2.5)
    assert barrier.loc["max_minus_mean_endpoints", "t_at_max"] == 0.0
    assert barrier.loc["max_minus_linear", "barrier"] == pytest.approx(3.9 - 3.25)
    assert barrier.loc["max_minus_linear", "t_at_max"] == 0.25


def test_the_token_budget_is_spent_exactly(model_a, checkpoints, starter):
    table = measure_interpolation(model_a, starter, other=load_model(checkpoints[0], device="cpu"), points=2, max_tokens=1500, progress=False)["interpolation"]
    assert (table["n_tokens"] == 1500).all()


def test_other_is_required(model_a, small):
    with pytest.raises(ValueError, match="pass other="):
        measure_interpolation(model_a, small, progress=False)["interpolation"]


def test_refuses_a_different_architecture(model_a, small, tmp_path):
    opt = load_model("tiny-opt", device="cpu")
    opt.model.save_pretrained(tmp_path)
    opt.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot interpolate") as info:
        measure_interpolation(model_a, small, other=load_model(str(tmp_path), device="cpu"), progress=False)["interpolation"]
    message = str(info.value)
    assert "architectures differ (GPT2LMHeadModel vs OPTForCausalLM)" in message
    assert "parameter names differ" in message and "Pass other= a checkpoint of the same architecture" in message
    assert "vocabularies" not in message  # same byte tokenizer


def test_refuses_a_different_vocabulary(model_a, checkpoints, small, tmp_path):
    """Same shapes, but the byte tokens are numbered in the opposite order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet(), reverse=True))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    load_model(checkpoints[1], device="cpu").model.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot interpolate") as info:
        measure_interpolation(model_a, small, other=load_model(str(tmp_path), device="cpu"), progress=False)["interpolation"]
    message = str(info.value)
    assert "tokenizer vocabularies differ (261 vs 261 tokens; 256 tokens missing or with other ids" in message
    assert "architectures" not in message and "parameter" not in message


def test_the_loaded_model_is_never_written(model_a, checkpoints, small):
    before = model_checksum(model_a.model)
    state = {k: v.clone() for k, v in model_a.model.state_dict().items()}
    measure_interpolation(model_a, small, other=load_model(checkpoints[1], device="cpu"), points=3, max_tokens=ALL, progress=False)["interpolation"]
    assert model_checksum(model_a.model) == before
    assert all(torch.equal(state[k], v) for k, v in model_a.model.state_dict().items())


def test_run_instrument_validates_and_stores_both_tables(store, model_a, checkpoints, small):
    result = run_instrument(store, model_a, small, "interpolation", other=checkpoints[1], points=3, progress=False,
                            bootstrap_resamples=100)
    assert set(result.tables) == {"interpolation", "interpolation_passages", "interpolation_barrier"}
    assert not result.reused
    assert result.run.status == "complete"
    assert (result.tables["interpolation_barrier"]["barrier"] >= 0).all()


def test_per_passage_losses_pool_to_the_line(model_a, checkpoints, small):
    tables = measure_interpolation(model_a, small, other=load_model(checkpoints[1], device="cpu"), points=3,
                                   max_tokens=ALL, tokens_per_passage=30, progress=False)
    line, passages = tables["interpolation"], tables["interpolation_passages"]
    validate_table("interpolation_passages", passages)
    assert (passages.groupby("passage_id")["n_tokens"].first() == 30).all()
    pooled = passages.groupby("t")[["nll_sum", "n_tokens"]].sum()
    assert (pooled["nll_sum"] / pooled["n_tokens"]).tolist() == pytest.approx(line["loss"].tolist(), rel=1e-12)
