"""Sparse term schemes (m3search.encoder.terms) against a reference written here from the per-position weights:
a plain-Python max per piece id, and a plain-Python whole-word split and hash, on hand-built windows and on
the tiny model's real outputs (windows cut mid-word, CJK, punctuation)."""
import numpy as np
import pytest

from m3search.encoder import terms as T
from m3search.errors import ConfigError

# id: piece. 0-3 special (cls, pad, eos, unk)
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁Kub", "ern", "etes", "▁the", ",", "▁K", "s", "中国", "▁,", "▁run",
          "ning", ")", "▁", "語"]
V = len(PIECES)
UNUSED = np.array([0, 1, 2, 3])
SPECIAL = {0, 1, 2, 3}
MASK64 = (1 << 64) - 1


# -- the reference ------------------------------------------------------------------------------------

def is_punct(piece: str) -> bool:
    import unicodedata

    body = piece[1:] if piece.startswith("▁") else piece
    return all(unicodedata.category(c)[0] in "PS" for c in body)  # '' (a bare '▁') counts too


def is_cjk(piece: str) -> bool:
    return any(0x4E00 <= ord(c) <= 0x9FFF or 0x3040 <= ord(c) <= 0x30FF or 0xAC00 <= ord(c) <= 0xD7A3 for c in piece)


def word_hash(ids) -> int:
    h = 1469598103934665603
    for i in ids:
        h = ((h ^ 0x9E3779B97F4A7C15 ^ int(i)) * 1099511628211) & MASK64
    return h


def reference(scheme, windows, strings, vocab_size=V):
    """{(text, column): weight} from windows = [(text, ids, weights)], strings: id -> piece; word columns
    after the vocabulary."""
    out: dict = {}

    def keep_max(key, value):
        if value > 0:
            out[key] = max(out.get(key, 0.0), value)

    for text, ids, w in windows:
        for i, x in zip(ids, w):
            i = int(i)
            if i in SPECIAL or (scheme.endswith("-nopunct") and is_punct(strings[i])):
                continue
            keep_max((text, i), float(x))
    if "+words" not in scheme:
        return out
    words: dict = {}
    for text, ids, w in windows:
        current: list = []  # (id, weight) of the word being read
        units = []
        for i, x in zip(ids, w):
            i, piece = int(i), strings[int(i)]
            alone = is_punct(piece) or is_cjk(piece)
            if i in SPECIAL:
                units.append(current)
                current = []
                continue
            if piece.startswith("▁") or alone or (current and (is_punct(strings[current[-1][0]]) or is_cjk(strings[current[-1][0]]))):
                units.append(current)
                current = []
            current.append((i, float(x)))
        units.append(current)  # a window's end ends a word
        for unit in units:
            if len(unit) >= 2:
                column = vocab_size + word_hash([i for i, _ in unit]) % (1 << T.WORD_BITS)
                total = float(np.float64(sum(np.float64(x) for _, x in unit)))
                if total > 0:
                    words[(text, column)] = max(words.get((text, column), 0.0), total)
    for key, value in words.items():
        out[key] = out.get(key, 0.0) + value
    return out


def as_dict(m):
    m = m.tocoo()
    return {(int(r), int(c)): float(v) for r, c, v in zip(m.row, m.col, m.data)}


def hand_windows():
    """(text, ids, weights) per window: words split by window starts, punctuation, CJK, zeros, specials."""
    rng = np.random.default_rng(3)
    seqs = [
        (0, ["<s>", "▁Kub", "ern", "etes", "▁the", ",", "s", "▁K", "s", "</s>"]),
        (0, ["<s>", "etes", "▁Kub", "ern", "etes", "中国", "ning", "▁run", "ning", "</s>"]),  # starts mid-word
        (1, ["<s>", "▁run", "ning", ")", "ning", "▁", "ning", "語", "s", "▁,", "▁run", "ning", "</s>"]),
        (2, ["<s>", "</s>"]),
        (3, ["<s>", "▁Kub", "ern", "<unk>", "etes", "▁run", "ning", "</s>", "<pad>", "<pad>"]),
    ]
    out = []
    for text, seq in seqs:
        w = rng.uniform(0.05, 1.0, size=len(seq)).astype(np.float32)
        w[seq.index("<s>")] = 0.9  # special tokens carry weights too: they must be dropped
        if text == 1:
            w[2] = 0.0  # a zero weight inside a word: the word keeps it in its sum, the piece is dropped
        out.append((text, np.array([PIECES.index(p) for p in seq]), w))
    return out


def encode_with(scheme, windows, n_texts=4):
    terms = T.SparseTerms(scheme, V, lambda ids: [PIECES[i] for i in ids])
    return terms.rows(n_texts, np.array([t for t, _, _ in windows]), [(ids, w) for _, ids, w in windows], UNUSED)


# -- hand-built pieces ----------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", T.SCHEMES)
def test_each_scheme_matches_the_reference(scheme):
    windows = hand_windows()
    got = encode_with(scheme, windows)
    assert got.shape == (4, T.sparse_width(scheme, V)) and got.dtype == np.float32 and got.has_sorted_indices
    want = reference(scheme, windows, PIECES)
    assert got.nnz == len(want) and (got.data > 0).all()
    assert as_dict(got) == pytest.approx(want, rel=1e-6)


def test_the_reference_sees_the_intended_terms():
    """The hand-built windows exercise what they claim: words of 2+ pieces, a window starting mid-word,
    punctuation and CJK cutting words, a special token inside a word."""
    windows = hand_windows()
    words = {c - V for (_, c) in reference("pieces+words", windows, PIECES) if c >= V}
    ids = {p: PIECES.index(p) for p in PIECES}
    expect = [["▁Kub", "ern", "etes"], ["▁K", "s"], ["▁run", "ning"], ["▁Kub", "ern"]]
    assert {word_hash([ids[p] for p in seq]) % (1 << T.WORD_BITS) for seq in expect} == words
    punct = {c for (_, c) in reference("pieces", windows, PIECES)} - {c for (_, c) in reference("pieces-nopunct", windows, PIECES)}
    assert sorted(PIECES[c] for c in punct) == [")", ",", "▁", "▁,"]


def test_pieces_is_todays_output():
    from m3search.encoder.postprocess import max_per_token

    windows = hand_windows()
    weights = [(ids, w) for _, ids, w in windows]
    today = max_per_token(4, np.array([t for t, _, _ in windows]), weights, V, UNUSED)
    got = encode_with("pieces", windows)
    assert (got != today).nnz == 0 and np.array_equal(got.indices, today.indices)


def test_words_add_to_the_piece_score_and_pieces_stay_as_they_are():
    windows = hand_windows()
    pieces, both = encode_with("pieces", windows), encode_with("pieces+words", windows)
    assert (both[:, :V] != pieces).nnz == 0
    assert both[:, V:].nnz > 0


def test_scheme_names_are_checked():
    assert T.check_scheme(None) == "pieces"
    with pytest.raises(ConfigError, match="sparse_terms 'words' is not one of pieces, pieces-nopunct"):
        T.check_scheme("words")
    assert T.sparse_width("pieces+words-nopunct", 10) == 10 + 2**22


# -- the tiny model ----------------------------------------------------------------------------------

def captured(encoder, texts, kind="passage"):
    """The encoder's batch and, per window, (text, ids, per-position weights) as its forward pass gave them."""
    windows = []
    run = encoder._run

    def keep(pieces):
        dense, weights, vectors = run(pieces)
        windows.extend((p.text, np.asarray(ids), np.asarray(w)) for p, (ids, w) in zip(pieces, weights))
        return dense, weights, vectors

    encoder._run = keep
    try:
        batch = encoder.encode(texts, kind=kind)
    finally:
        del encoder._run
    return batch, windows


TEXTS = ["Kubernetes orchestrates containers (running everywhere), Kubernetes-style.",
         "中国的 Kubernetes 集群: running, 運用 and monitoring clusters of machines!",
         "short"]


@pytest.mark.parametrize("scheme", T.SCHEMES)
def test_model_output_matches_the_reference_over_windows(make_encoder, scheme):
    # 16-token windows with overlap 5: words are cut at window starts
    encoder = make_encoder(window_tokens=16, window_overlap=5, sparse_terms=scheme)
    batch, windows = captured(encoder, TEXTS)
    assert sum(1 for t, _, _ in windows if t == 0) > 1
    ids = sorted({int(i) for _, seq, _ in windows for i in seq})
    strings = dict(zip(ids, encoder.token_strings(ids)))
    want = reference(scheme, windows, strings, encoder.vocab_size)
    assert batch.sparse.shape == (3, T.sparse_width(scheme, encoder.vocab_size))
    assert as_dict(batch.sparse) == pytest.approx(want, rel=1e-5)
    assert any(c >= encoder.vocab_size for _, c in want) == ("+words" in scheme)
    assert encoder.identity.sparse_terms == scheme
    assert encoder.identity.sparse_width == batch.sparse.shape[1]


def test_model_pieces_scheme_is_exactly_the_default(make_encoder, tiny_encoder):
    a = tiny_encoder.encode(TEXTS)
    b = make_encoder(sparse_terms="pieces").encode(TEXTS)
    assert (a.sparse != b.sparse).nnz == 0 and a.sparse.shape == b.sparse.shape
    assert make_encoder(sparse_terms="pieces").identity == tiny_encoder.identity


def test_query_path_without_torch_uses_the_same_scheme(tiny_model_dir, make_encoder, tmp_path):
    from m3search.encoder.fast_query import FastQueryEncoder, load_fast

    fast = load_fast(tiny_model_dir, device="cpu", cache_dir=tmp_path, sparse_terms="pieces+words")
    assert isinstance(fast, FastQueryEncoder)
    torch_side = make_encoder(sparse_terms="pieces+words")
    queries = ["Kubernetes clusters", "中国 running"]
    got, want = as_dict(fast.encode(queries, kind="query").sparse), as_dict(torch_side.encode(queries, kind="query").sparse)
    assert got.keys() == want.keys() and any(c >= torch_side.vocab_size for _, c in got)
    assert got == pytest.approx(want, rel=1e-3, abs=1e-4)
    assert fast.identity == torch_side.identity


def test_hashing_encoder_takes_pieces_only():
    from m3search.encoder import HashingEncoder

    assert HashingEncoder(dim=8, vocab_size=100, sparse_terms="pieces").identity.sparse_terms == "pieces"
    with pytest.raises(ConfigError, match="hashing encoder takes sparse_terms='pieces' only"):
        HashingEncoder(dim=8, vocab_size=100, sparse_terms="pieces+words")
