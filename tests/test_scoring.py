"""The reference scorers against literal transcriptions of the definitions."""
import numpy as np

from m3search import scoring


def test_sparse_equals_dict_definition(hashing_encoder):
    q = hashing_encoder.encode(["red apple pie", "zzz"], kind="query")
    d = hashing_encoder.encode(["apple pie with red apple", "blue sky", "pie"])
    got = scoring.sparse_scores(q.sparse, d.sparse)
    for i in range(len(q)):
        for j in range(len(d)):
            lq, ld = q.lexical_weights(i), d.lexical_weights(j)
            want = sum(w * ld[t] for t, w in lq.items() if t in ld)
            assert abs(got[i, j] - want) < 1e-5


def test_multivec_equals_loop(rng, hashing_encoder):
    q = hashing_encoder.encode(["a b c", "d"], kind="query")
    d = hashing_encoder.encode(["a x", "b c d e f", "g"])
    got = scoring.multivec_scores(q, d)
    for i in range(len(q)):
        for j in range(len(d)):
            qv, dv = q.token_vectors(i), d.token_vectors(j)
            want = np.mean([max(float(a @ b) for b in dv) for a in qv])
            assert abs(got[i, j] - want) < 1e-5
            assert abs(scoring.maxsim(qv, dv) - want) < 1e-5


def test_dense_is_cosine(hashing_encoder):
    b = hashing_encoder.encode(["one two", "two three", ""])
    s = scoring.dense_scores(b.dense, b.dense)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-6)
