"""Small corpora cut from a real one, for the instruments' tests."""

from atlas import Corpus


def first_domains(corpus: Corpus, domains: int, per_domain: int) -> Corpus:
    """The first ``per_domain`` passages of each of the corpus's first ``domains`` domains, domain by domain."""
    return Corpus(f"{domains}x{per_domain}", tuple(
        p for d in corpus.domains[:domains] for p in [q for q in corpus.passages if q.domain == d][:per_domain]))
