"""Whole-word lexical terms (m3search.encoder.words) on a hand-made vocabulary, against hand-computed terms
and scores."""
import numpy as np
import pytest

from m3search.encoder import words as W

# id: piece. 0-3 special (cls, pad, eos, unk)
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁Kub", "ern", "etes", "▁the", ",", "▁K", "s", "中国", "▁,", "▁run", "ning"]
UNUSED = np.array([0, 1, 2, 3])
STARTS, ALONE = W.piece_classes(PIECES)
V = len(PIECES)


def encoded(texts):
    """texts: per text, a list of windows; a window is a list of (piece, weight) -> the flat arrays."""
    ids, w, ptr, owner = [], [], [0], []
    for t, windows in enumerate(texts):
        for win in windows:
            ids += [0] + [PIECES.index(p) for p, _ in win] + [2]
            w += [0.9] + [x for _, x in win] + [0.8]  # special tokens get weights too: they must be dropped
            ptr.append(len(ids))
            owner.append(t)
    return np.array(ids), np.array(w, dtype=np.float32), np.array(ptr), np.array(owner)


def terms(texts, agg="sum", multi_only=False):
    ids, w, ptr, owner = encoded(texts)
    m = W.word_matrix(len(texts), owner, ids, w, ptr, STARTS, ALONE, UNUSED, V, agg=agg, bits=16,
                      multi_only=multi_only)
    return m


def column(seq):
    ids = np.array([PIECES.index(p) for p in seq])
    h = W.unit_hashes(ids, np.array([0]), np.array([len(ids)]))
    return V + int(h[0] % np.uint64(1 << 16))


def test_classes():
    assert [PIECES[i] for i in np.flatnonzero(STARTS)] == ["▁Kub", "▁the", "▁K", "▁,", "▁run"]
    assert [PIECES[i] for i in np.flatnonzero(ALONE)] == [",", "中国", "▁,"]


def test_words_are_word_initial_pieces_with_their_continuations():
    doc = [[("▁Kub", 0.5), ("ern", 0.25), ("etes", 0.125), ("▁the", 0.1), (",", 0.3), ("s", 0.2),
            ("▁K", 0.4), ("s", 0.05), ("中国", 0.6), ("ning", 0.7)]]
    m = terms([doc]).tocsr()
    got = dict(zip(m.indices.tolist(), m.data.tolist()))
    # after a term that stands alone (',' or a CJK piece) a continuation piece starts a term of its own
    want = {column(["▁Kub", "ern", "etes"]): 0.875, column(["▁the"]): 0.1, column([","]): 0.3,
            column(["s"]): 0.2, column(["▁K", "s"]): 0.45, column(["中国"]): 0.6, column(["ning"]): 0.7}
    assert len(set(want)) == len(want)  # no collision among these
    assert got == pytest.approx(want)


@pytest.mark.parametrize("agg, value", [("sum", 0.75), ("max", 0.5), ("mean", 0.375), ("first", 0.5),
                                        ("sqrtsum", 0.75 / np.sqrt(2))])
def test_aggregations(agg, value):
    m = terms([[[("▁run", 0.5), ("ning", 0.25)]]], agg=agg)
    assert m.nnz == 1 and m.indices[0] == column(["▁run", "ning"])
    assert m.data[0] == pytest.approx(value)


def test_a_window_start_or_special_token_ends_a_word_and_max_over_occurrences():
    # window 2 starts with a continuation piece: it is a term of its own, not part of window 1's last word
    doc = [[("▁run", 0.5), ("ning", 0.25)], [("ning", 0.1), ("▁run", 0.2), ("ning", 0.2)]]
    m = terms([doc]).tocsr()
    got = dict(zip(m.indices.tolist(), m.data.tolist()))
    assert got == pytest.approx({column(["▁run", "ning"]): 0.75, column(["ning"]): 0.1})


def test_sequence_identity_is_exact():
    a = W.unit_hashes(np.array([4, 5, 5, 4]), np.array([0, 2]), np.array([2, 2]))
    assert a[0] != a[1]
    b = W.unit_hashes(np.array([4, 5]), np.array([0]), np.array([2]))
    assert a[0] == b[0]


def test_word_score_is_the_sum_over_shared_words_and_adds_to_the_piece_score():
    rng = np.random.default_rng(7)
    words = [["▁Kub", "ern", "etes"], ["▁run", "ning"], ["▁K", "s"], ["▁the"], [","]]
    texts = []
    for _ in range(6):
        win = []
        for k in rng.integers(0, len(words), size=8):
            win += [(p, float(rng.uniform(0.05, 1))) for p in words[k]]
        texts.append([win])
    ids, w, ptr, owner = encoded(texts)
    m = W.word_matrix(len(texts), owner, ids, w, ptr, STARTS, ALONE, UNUSED, V, agg="sum", bits=16,
                      multi_only=True)
    # by hand: per text, each multi-piece word's max over occurrences of the sum of its pieces' weights
    per_text = []
    for win in (t[0] for t in texts):
        best, i = {}, 0
        while i < len(win):
            j = i + 1
            while j < len(win) and not win[j][0].startswith("▁") and win[j][0] != ",":
                j += 1
            if j - i > 1:
                key = tuple(p for p, _ in win[i:j])
                best[key] = max(best.get(key, 0.0), sum(x for _, x in win[i:j]))
            i = j
        per_text.append(best)
    scores = (m @ m.T).toarray()
    for a in range(len(texts)):
        for b in range(len(texts)):
            want = sum(v * per_text[b][k] for k, v in per_text[a].items() if k in per_text[b])
            assert scores[a, b] == pytest.approx(want, rel=1e-5)
    pieces = W.sp.random(len(texts), V, density=0.3, random_state=1, format="csr", dtype=np.float32)
    both = W.pieces_and_words(pieces, m)
    assert np.allclose((both @ both.T).toarray(), (pieces @ pieces.T).toarray() + scores, rtol=1e-5)
