import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas import CorpusError, load_corpus
from atlas._corpus import SEED_DOMAINS


def write(tmp_path, lines, name="c.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def rec(i, domain="poetry", text="some text"):
    return json.dumps({"id": f"p{i}", "domain": domain, "text": text})


def test_starter_corpus_covers_the_seed_domains(starter):
    assert starter.domains == list(SEED_DOMAINS)
    assert all(sum(p.domain == d for p in starter.passages) == 12 for d in SEED_DOMAINS)
    assert all(p.source.startswith("atlas-starter-v1") for p in starter.passages)


def test_shared_corpus_loads(shared_corpus):
    assert len(shared_corpus.passages) == 480
    assert set(shared_corpus.domains) == set(SEED_DOMAINS)


@pytest.mark.parametrize("lines, message", [
    ([], "holds no passages"),
    ([rec(1), "{not json"], "line 2: not valid JSON"),
    ([rec(1), json.dumps({"id": "p2", "text": "x"})], "line 2: missing field 'domain'"),
    ([rec(1), rec(1)], "line 2: duplicate id 'p1' (first used on line 1)"),
    ([rec(1, text="   ")], "line 1: passage 'p1' has empty text"),
    ([rec(1), b'{"id": "p2", "domain": "x", "text": "caf\xe9"}'], "line 2: not valid UTF-8"),
    (["[1, 2]"], "line 1: expected a JSON object"),
    ([json.dumps({"id": 3, "domain": "x", "text": "y"})], "line 1: field 'id' must be a string"),
])
def test_malformed_corpora_are_rejected_naming_the_line(tmp_path, lines, message):
    with pytest.raises(CorpusError, match=None) as info:
        load_corpus(write(tmp_path, lines))
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(tmp_path / "absent.jsonl")


def test_hash_is_content_based(tmp_path):
    a = load_corpus(write(tmp_path, [rec(1), rec(2)], "a.jsonl"))
    b = load_corpus(write(tmp_path, [rec(1), rec(2)], "b.jsonl"))
    c = load_corpus(write(tmp_path, [rec(1), rec(2, text="other")], "c.jsonl"))
    assert a.hash == b.hash != c.hash


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.text(min_size=1).filter(str.strip)),
                min_size=1, max_size=30), st.integers(1, 5))
def test_sample_takes_the_first_n_of_each_domain(tmp_path_factory, records, k):
    lines = [json.dumps({"id": f"p{i}", "domain": d, "text": t}) for i, (d, t) in enumerate(records)]
    corpus = load_corpus(write(tmp_path_factory.mktemp("c"), lines))
    sample = corpus.sample(k)
    for domain in corpus.domains:
        ids = [p.id for p in corpus.passages if p.domain == domain]
        assert [p.id for p in sample.passages if p.domain == domain] == ids[:k]
