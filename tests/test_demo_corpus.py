"""The demo corpus is what the demo's phenomenon rests on: its two kinds of documents must be what the
module says they are."""

import pytest

from grokcopy.training.demo_corpus import ALPHABET, DemoCorpusConfig, demo_corpus_files, generate_documents


def _split(config):
    docs = list(generate_documents(config))
    prose = [d for d in docs if d[0] not in ALPHABET]
    return docs, prose, [d for d in docs if d[0] in ALPHABET]


def test_single_cycle_prose_is_one_deterministic_cycle_through_its_own_symbols():
    config = DemoCorpusConfig(num_documents=400, identifier_share=0.5, prose_symbols=20, prose_certainty=1.0,
                              prose_single_cycle=True)
    docs, prose, identifiers = _split(config)
    assert len(docs) == 400 and 150 < len(prose) < 250 and all(len(d) == 40 for d in docs)
    successor = {}
    for doc in prose:
        assert not set(doc) & set(ALPHABET)
        for a, b in zip(doc, doc[1:]):
            assert successor.setdefault(a, b) == b  # deterministic
    assert len(successor) == 20
    symbol, seen = next(iter(successor)), []
    while symbol not in seen:
        seen.append(symbol)
        symbol = successor[symbol]
    assert len(seen) == 20  # one cycle through all 20 symbols: each document repeats with period 20
    assert all(doc[:20] == doc[20:] for doc in prose)
    assert all(set(doc) <= set(ALPHABET) for doc in identifiers)


def test_identifier_documents_repeat_a_passage_at_a_varying_offset():
    config = DemoCorpusConfig(num_documents=300, span_min=6, span_max=14)
    distances = set()
    for doc in generate_documents(config):
        found = [(i, j) for i in range(40 - 6) for j in range(i + 6, 40 - 5) if doc[i:i + 6] == doc[j:j + 6]]
        assert found, doc
        distances.add(found[0][1] - found[0][0])
    assert len(distances) > 10


def test_corpus_is_deterministic_and_cached(tmp_path):
    config = DemoCorpusConfig(num_documents=50, identifier_share=0.5, prose_symbols=20, prose_single_cycle=True)
    assert list(generate_documents(config)) == list(generate_documents(config))
    first = demo_corpus_files(str(tmp_path), config)
    assert demo_corpus_files(str(tmp_path), config) == first
    other = DemoCorpusConfig(num_documents=50, identifier_share=0.5, prose_symbols=20)
    assert demo_corpus_files(str(tmp_path), other) != first  # a different corpus never reuses the cache


def test_identifier_lines_hold_newlines_that_repeat_with_their_passage():
    """The copy test separates its sequences with newlines: with `newline_share` the demo model learns one."""
    import pytest

    config = DemoCorpusConfig(num_documents=400, identifier_share=0.5, prose_symbols=20, prose_single_cycle=True,
                              newline_share=0.125, seed=5)
    docs = list(generate_documents(config))
    prose = [d for d in docs if d[0] >= "\u4e00"]  # the prose symbols are CJK ideographs
    identifiers = [d for d in docs if d[0] < "\u4e00"]
    assert all("\n" not in doc for doc in prose) and all(len(d) == 40 for d in docs) and 150 < len(prose) < 250
    share = sum(doc.count("\n") for doc in identifiers) / (40 * len(identifiers))
    assert 0.09 < share < 0.16
    # a passage's second copy repeats its newlines: some 6-symbol repeat contains one
    assert any(doc[i:i + 6] == doc[j:j + 6] and "\n" in doc[i:i + 6]
               for doc in identifiers for i in range(34) for j in range(i + 6, 35))
    with pytest.raises(ValueError, match="newline_share"):
        DemoCorpusConfig(newline_share=1.5)
    # the corpora made before the option keep their cache names (the demo's: run_config.json of
    # docs/reproduction/demo-seeds/shipped/seed-0)
    shipped = DemoCorpusConfig(identifier_share=0.5, prose_symbols=20, prose_certainty=1.0, prose_single_cycle=True,
                               num_documents=400000)
    assert shipped.key == "12c54bf68e85" and config.key != DemoCorpusConfig(**{**config.__dict__, "newline_share": 0}).key


def test_small_alphabet_documents_make_one_symbol_ambiguous_and_leave_other_corpora_unchanged():
    """A share of identifier documents over 8 symbols: each symbol recurs often, so the repeat is found only by
    matching several preceding symbols; with the share at 0 the corpus is the one made before the option."""
    from grokcopy.training.demo_corpus import ALPHABET

    base = DemoCorpusConfig(num_documents=200, document_chars=128, seed=3)
    mixed = DemoCorpusConfig(num_documents=200, document_chars=128, small_alphabet_share=0.5, seed=3)
    assert base.key == DemoCorpusConfig(num_documents=200, document_chars=128, seed=3, small_alphabet=5).key
    assert mixed.key != base.key
    docs = list(generate_documents(mixed))
    small = [d for d in docs if set(d) <= set(ALPHABET[:8])]
    assert 70 <= len(small) <= 130  # about half
    for doc in small:
        assert max(doc.count(c) for c in set(doc)) >= 10  # one symbol is no address
        assert any(doc[i:i + 6] == doc[j:j + 6] for i in range(122) for j in range(i + 6, 123))  # the repeat is there
    with pytest.raises(ValueError, match="small_alphabet"):
        DemoCorpusConfig(small_alphabet_share=0.5, small_alphabet=1)
