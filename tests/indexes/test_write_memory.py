"""The write path's memory savings keep results the same: buffered token vectors wait in an unlinked file,
token vectors are range-checked a block at a time, the codec's residuals are computed a block at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3search.encoder import HashingEncoder
from m3search.errors import InputError
from m3search.indexes import inputs
from m3search.indexes.faiss_support import faiss_threads
from m3search.indexes.multivec import codecs
from m3search.indexes.multivec.codecs import Codec
from m3search.indexes.token_spill import TokenSpill
from m3search.indexes.writer import _buffered_batch
from m3search.types import EncodedBatch


def _rss_file_kb() -> int:
    """This process's resident pages of mapped files (kB); skips the test where /proc is not there."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("reads /proc/self/status")
    return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("RssFile:"))


def _batches():
    enc = HashingEncoder(dim=16, vocab_size=500)
    return [enc.encode([f"text {b} {i} " + "w " * (i % 7) for i in range(n)]) for b, n in enumerate((3, 1, 5, 2))]


def test_buffered_batch_equals_concat_with_token_vectors_from_the_spill_file(tmp_path):
    batches = _batches()
    expected = EncodedBatch.concat(batches)
    spill = TokenSpill(tmp_path, 16)
    for b in batches:
        spill.append(b.multivec)
    assert not list(tmp_path.iterdir()), "the spill file is unlinked: nothing to leave behind"
    got = _buffered_batch([(0, b.dense, b.sparse, b.multivec_lengths) for b in batches], spill)
    spill.close()  # the mapping outlives the file object
    for name in ("dense", "multivec", "multivec_lengths"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    assert (got.sparse != expected.sparse).nnz == 0 and got.sparse.shape == expected.sparse.shape
    assert not got.multivec.flags.writeable
    before = got.multivec.copy()
    got.multivec[1:3].drop_pages()  # the whole mapping's pages leave the resident set, the data stays
    np.testing.assert_array_equal(got.multivec, before)
    with pytest.raises(ValueError, match="expected"):
        TokenSpill(tmp_path, 8).append(batches[0].multivec)


def test_drop_pages_takes_the_mapping_out_of_the_resident_set(tmp_path):
    spill = TokenSpill(tmp_path, 256)
    spill.append(np.random.default_rng(0).random((16_384, 256), dtype=np.float32))  # 16 MB
    rows = spill.array()
    before = _rss_file_kb()
    total = float(rows.sum(dtype=np.float64))  # reads every page
    assert _rss_file_kb() - before > 12_000
    rows[:10].drop_pages()
    assert _rss_file_kb() - before < 4_000
    assert float(rows.sum(dtype=np.float64)) == total  # read again from the file


def test_a_checked_segment_array_drops_its_pages_and_still_reads_checked(tmp_path):
    """A merge reads each source segment's codes once and then drops their pages (segment_files.CheckedArray)."""
    from m3search.errors import IndexFormatError
    from m3search.indexes import segment_files as sf

    data = np.random.default_rng(1).integers(0, 255, (16_384, 1024), dtype=np.uint8)  # 16 MB
    entry = sf.write_array(tmp_path, "codes.arr", data)
    codes = sf.open_checked(tmp_path, "codes.arr", entry)
    before = _rss_file_kb()
    assert np.array_equal(codes[:], data)  # reads (and checks) every block
    assert _rss_file_kb() - before > 12_000
    codes.drop_pages()
    assert _rss_file_kb() - before < 4_000
    assert np.array_equal(codes[:], data)  # read again from the file
    with open(tmp_path / "codes.arr", "r+b") as f:  # damage one byte: a new opening must refuse it
        f.seek(100)
        f.write(bytes([data[0, 100] ^ 0xFF]))
    with pytest.raises(IndexFormatError):
        sf.open_checked(tmp_path, "codes.arr", entry)[:]


def test_bad_token_found_in_a_later_block(monkeypatch):
    monkeypatch.setattr(inputs, "_CHECK_ROWS", 4)
    batch = EncodedBatch.concat(_batches())
    lengths = batch.multivec_lengths
    row = 2  # the third text: its tokens start at lengths[0] + lengths[1]
    t = int(lengths[:row].sum()) + int(lengths[row]) - 1  # its last token, past the first block of 4
    assert t >= 4
    batch.multivec[t, 3] = np.inf
    with pytest.raises(InputError, match=f"token vector {int(lengths[row]) - 1} of row {row}"):
        inputs.check_tokens(batch.multivec, lengths)
    batch.multivec[t, 3] = 0.5
    inputs.check_tokens(batch.multivec, lengths)  # in range again: no error


def test_residuals_computed_a_block_at_a_time_give_the_same_codec(monkeypatch):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 32))
    x = (centers[rng.integers(0, 40, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with faiss_threads(1):
        whole = Codec.train("rpq8", x, coarse_k=64, seed=3)
        monkeypatch.setattr(codecs, "_ENCODE_ROWS", 333)  # residuals and encoding in blocks of 333 rows
        blocks = Codec.train("rpq8", x, coarse_k=64, seed=3)
    assert whole.codec_id == blocks.codec_id
    np.testing.assert_array_equal(whole.encode(x), blocks.encode(x))


def test_a_consumed_sample_is_shuffled_in_place_into_the_same_codec():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(30, 32))
    x = (centers[rng.integers(0, 30, 4000)] + 0.3 * rng.normal(size=(4000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mine = x.copy()
    with faiss_threads(1):
        copied = Codec.train("rpq8", x, coarse_k=64, seed=4, store_norm=True)
        consumed = Codec.train("rpq8", mine, coarse_k=64, seed=4, store_norm=True, consume=True)
    np.testing.assert_array_equal(x, x.copy())  # not consumed: the caller's rows stay where they were
    assert not np.array_equal(mine, x)  # consumed: shuffled in place
    np.testing.assert_array_equal(np.sort(mine, axis=0), np.sort(x, axis=0))  # the same rows
    assert consumed.codec_id == copied.codec_id and consumed.fidelity == copied.fidelity
    np.testing.assert_array_equal(consumed.encode(x), copied.encode(x))


def test_segment_build_leaves_the_buffer_mapping_out_of_the_resident_set(tmp_path):
    from m3search.indexes.multivec.component import MultivecComponent

    _rss_file_kb()  # skips where there is no /proc
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40_000, 128)).astype(np.float32)  # 20 MB
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spill = TokenSpill(tmp_path, 128)
    spill.append(x)
    rows = spill.array()
    lengths = np.full(400, 100, np.int64)
    import scipy.sparse as sp

    batch = EncodedBatch(dense=np.zeros((400, 4), np.float32), sparse=sp.csr_matrix((400, 8), dtype=np.float32),
                         multivec=rows, multivec_lengths=lengths)
    comp = MultivecComponent({"min_train_tokens": 1000, "train_tokens": 8000, "coarse_k": 64, "threads": 1})
    before = _rss_file_kb()
    meta = comp.build(tmp_path / "seg", batch, tmp_path / "shared")
    assert _rss_file_kb() - before < 8_000, "each pass over the buffered tokens drops the pages it read"
    reader = comp.open(tmp_path / "seg", meta, tmp_path / "shared")
    np.testing.assert_allclose(reader.token_vectors(np.arange(3))[0], x[:300], atol=0.35)  # what was buffered
    spill.close()


def test_bounded_pq_sample_keeps_fidelity():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 32))
    x = (centers[rng.integers(0, 50, 12_000)] + 0.4 * rng.normal(size=(12_000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with faiss_threads(1):
        every = Codec.train("rpq8", x, coarse_k=128, seed=5, max_pq_points=None)
        bounded = Codec.train("rpq8", x, coarse_k=128, seed=5, max_pq_points=4096)
    assert bounded.codec_id != every.codec_id  # the PQ did learn from another sample
    assert bounded.fidelity["mean_cosine"] > every.fidelity["mean_cosine"] - 0.005
    assert every.fidelity["mean_cosine"] > 0.9  # a codec worth comparing


def test_batches_without_token_vectors_are_spilled_as_nothing(tmp_path):
    from m3search.indexes.token_spill import TokenSpill

    for dim in (0, 4):
        spill = TokenSpill(tmp_path, dim)
        spill.append(np.zeros((0, dim), np.float32))
        spill.append(np.ones((2, dim), np.float32))
        assert spill.array().shape == (2, dim) and spill.rows == 2
        spill.close()
