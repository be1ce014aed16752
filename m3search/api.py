"""The embedded Python API: an index folder, its encoder and the query planner behind three calls.

>>> import m3search, tempfile
>>> folder = tempfile.mkdtemp()
>>> index = m3search.build_index(folder + "/idx", [
...     {"id": "kw", "text": "Press F5 to open the Navigator"},
...     {"id": "de", "text": "Mit F5 öffnen Sie den Navigator"},
...     {"id": "xx", "text": "Sorting cells in a spreadsheet"},
... ], model="hashing:dim=32")
>>> [hit.docid for hit in index.search("open the navigator", k=2)]
['kw', 'de']
>>> hit = index.search("sorting cells", k=1, mode="dense+sparse")[0]
>>> hit.docid, sorted(hit.scores)
('xx', ['dense', 'sparse'])
>>> index.delete(["xx"])
1
>>> len(index)
2
>>> index.close()

An index remembers the model it was built with, so `m3search.open_index(path)` needs nothing else.
"""
from __future__ import annotations

import logging
import threading
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from m3search.encoder import DEFAULT_MODEL, Encoder, HashingEncoder, load_encoder
from m3search.errors import ConfigError, IndexFormatError, InputError, ModelError
from m3search.ingest import DEFAULT_BATCH_SIZE, DEFAULT_COMMIT_INTERVAL, AddResult, DocLike, encode_documents, ingest
from m3search.planner import DEFAULT_MODE, Hit, Planner
from m3search.planner.filters import Filter
from m3search.planner.fusion import DEFAULT_RRF_K
from m3search.planner.weights import TEXT_DEFAULT_MODE
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)
_UNREAD = object()  # search defaults not read yet


if TYPE_CHECKING:  # pragma: no cover
    from m3search.indexes.search_defaults import SearchDefaults
    from m3search.tuner import TuneReport

__all__ = ["AddResult", "SearchIndex", "build_index", "open_index", "tune"]


def tune(index: "SearchIndex", queries: Any, qrels: Any, **options: Any) -> "TuneReport":
    """`m3search.tune(index, queries, qrels, ...)`: the same as `index.tune(...)`."""
    return index.tune(queries, qrels, **options)


def build_index(
    path: str | Path,
    docs: Iterable[DocLike] | None = None,
    model: str | Path | Encoder | None = None,
    *,
    components: Mapping[str, dict] | None = None,
    device: str | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    progress: bool = False,
    shards: int | None = None,
    sparse_terms: str | None = None,
) -> "SearchIndex":
    """Create an index at `path` (or open the one already there) and add `docs` to it.

    docs:  dicts with an id (`id`, `docid` or `_id`), a `text` and optionally a `title` and `metadata`;
           `(id, text)` tuples; or `m3search.Document`s. Ids already in the index are skipped, so
           calling this again after an interruption resumes where the last commit left off.
    model: None for the bundled default ('m3search-small'), a folder in BGE-M3's layout, 'hashing:dim=..'
           for the deterministic test encoder, or an Encoder. The index records the name or folder so that
           `open_index(path)` can load it again (an Encoder object is recorded only if it has a `reference`
           attribute; otherwise pass it to open_index too). An existing index must be given the same model
           it was built with, or none.
    components: per-component configs, e.g. {'dense': {...}, 'sparse': {...}, 'multivec': {...}}
           (default: all three with their defaults). Only used when the index is created.
    encoder_options: passed to `load_encoder` (e.g. {'batch_tokens': 8192} for an M3 model).
    shards: create a sharded index of that many shards (`m3search.sharding.ShardedIndex`, same surface).
    sparse_terms: how lexical weights become sparse terms, recorded in the new index and used for its queries:
           'pieces' (default), 'pieces-nopunct', 'pieces+words', 'pieces+words-nopunct' (m3search.encoder.terms).
           For an existing index, None or the scheme it was built with.
    """
    from m3search.encoder.terms import check_scheme

    path = Path(path)
    if sparse_terms is not None:
        check_scheme(sparse_terms)
        if _is_sharded(path) or _is_index(path):
            _check_recorded_terms(path, sparse_terms)
    if _is_sharded(path) or shards:
        index = _sharded(path, model, device, encoder_options, components, shards, sparse_terms)
    elif _is_index(path):
        index = open_index(path, model, device=device, encoder_options=encoder_options)
    else:
        encoder = _new_index_encoder(model, device, encoder_options, sparse_terms)
        # create() returns the index open for writing: close it, writes take the lock only while they run
        _index_class().create(path, encoder.identity, _model_reference(model, encoder), _components(components)).close()
        index = SearchIndex(path, encoder=encoder)
    if docs is not None:
        try:
            index.add(docs, batch_size=batch_size, max_length=max_length, commit_interval=commit_interval,
                      progress=progress)
        except BaseException:
            index.close()
            raise
    return index


def open_index(
    path: str | Path,
    model: str | Path | Encoder | None = None,
    *,
    device: str | None = None,
    encoder_options: Mapping[str, Any] | None = None,
) -> "SearchIndex":
    """Open an existing index. Its encoder is loaded on first use from the model reference it stores,
    unless `model` is given (it must match the index's encoder identity). Either way the encoder is loaded
    with the sparse term scheme the index records."""
    path = Path(path)
    if _is_sharded(path):
        return _sharded(path, model, device, encoder_options)
    if not _is_index(path):
        from m3search.indexes.manifest import not_an_index_message

        raise IndexFormatError(not_an_index_message(path))
    encoder = None
    if model is not None:
        encoder = _load_encoder(model, device, _with_terms(encoder_options, _recorded_terms(path)))
    return SearchIndex(path, encoder=encoder, device=device, encoder_options=encoder_options)


class SearchIndex:
    """An index on disk with its encoder: add, delete, search. Use as a context manager or call close().

    Each search sees the newest commit at the moment it starts (of this object, another one or another
    process); `add`, `upsert` and `delete` commit before returning.
    Writes take the index's writer lock only while they run, so several SearchIndex objects (or
    processes) can search one index while another writes it.
    """

    def __init__(self, path: str | Path, encoder: Encoder | None = None, device: str | None = None,
                 encoder_options: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self._device = device
        self._encoder_options = encoder_options
        self._index = _index_class().open(self.path, writable=False)
        self._identity = self._index.manifest.identity
        self.model: str | None = self._index.manifest.model
        self._encoder: Encoder | None = None
        if encoder is not None:
            try:
                self._check_identity(encoder)
            except BaseException:
                self._index.close()
                raise
            self._encoder = encoder
        self._snapshot = None
        self._planner: Planner | None = None
        self._seen_txnid = -1
        self._planner_lock = threading.Lock()
        self._warned_untrained = False
        self._search_defaults: Any = _UNREAD

    # -- encoder ------------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The index's encoder, loaded on first use from the model the index was built with."""
        if self._encoder is None:
            if self.model is None:
                raise ModelError(
                    f"the index at {self.path} was built with an encoder object and records no model: "
                    "open it with open_index(path, model=...)"
                )
            try:
                # the index's own sparse term scheme: its queries must be encoded as its documents were
                options = _with_terms(self._encoder_options, self._identity.sparse_terms)
                encoder = _load_encoder(self.model, self._device, options)
            except ModelError as e:
                raise ModelError(
                    f"can't load the model {self.model!r} that the index at {self.path} was built with ({e}); "
                    "pass the model explicitly (--model, or model= in Python)"
                ) from e
            self._check_identity(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_identity(self, encoder: Encoder) -> None:
        from m3search.indexes.index import check_encoder  # the one encoder-identity check

        check_encoder(self.path, self._index.manifest, encoder.identity)

    # -- reading ------------------------------------------------------------------------------

    @property
    def planner(self) -> Planner:
        """A planner over the newest commit (re-taken when another process or object has committed since)."""
        with self._planner_lock:
            if self._planner is None or self._stale():
                # the old snapshot is not closed here: a search on another thread may still use it
                self._snapshot = self._index.snapshot()
                self._planner = self._new_planner(self._snapshot)
            return self._planner

    def _new_planner(self, snapshot) -> Planner:
        # no reference back to self: a replaced planner (and its snapshot) is freed as soon as the last
        # search using it returns, not at the next cyclic garbage collection
        strings = self._encoder.token_strings if self._encoder is not None else _lazy_strings(weakref.ref(self))
        return Planner(snapshot, token_strings=strings)

    def _stale(self) -> bool:
        """Whether a commit happened since our snapshot: LMDB's last transaction id (no transaction needed),
        then the committed generation if that moved."""
        txnid = self._index.last_txnid()
        if txnid == self._seen_txnid:
            return False
        self._seen_txnid = txnid
        return self._snapshot is None or self._index.generation != self._snapshot.generation

    def refresh(self) -> int:
        """Move to the newest commit now (searches do this by themselves); returns its generation."""
        self._refresh()
        return self._index.generation

    def __len__(self) -> int:
        """Live documents as of the last commit."""
        return int(self._index.n_live)

    def search(self, query: str, *, k: int = 10, mode: str | None = None,
               weights: Mapping[str, float] | str | None = None, depths: int | Mapping[str, int] | None = None,
               fusion: str | None = None, rrf_k: float | None = None, explain: bool = False, all_scores: bool = False,
               with_text: bool = True, max_length: int | None = None,
               params: Mapping[str, Mapping[str, Any]] | None = None, filter: Any = None, offset: int = 0,
               fields: Sequence[str] | None = None, drop_pieces: str | Sequence[str] | None = None) -> list[Hit]:
        """Search with one query; returns its hits, best first. For several queries use `search_many`.

        mode:    'dense', 'sparse', 'multivec', 'dense+sparse' or 'all' (the default: dense 1, sparse 0.3,
                 multivec 1; 'dense' for a model whose sparse and multi-vector heads are untrained); or
                 weights such as {'dense': 1, 'sparse': 0.3} / 'dense=1,sparse=0.3'. When mode, weights and
                 fusion are all left out, the index's stored search defaults (`m3search tune`) apply, if any.
        k:       hits per query. depths: candidates from each index (default 100 each; int or
                 {'dense': n, 'sparse': n}). fusion: 'weighted' (default) or 'rrf' (with rrf_k, default 60).
        explain: attach each hit's matched lexical terms. all_scores: score all three components even when
                 the mode uses fewer. with_text: fetch each hit's text and title.
        filter:  a metadata filter such as {'lang': 'de', 'year': {'$gte': 2020}} (see
                 m3search.planner.filters); only matching documents are searched, in every index.
        offset:  skip this many of the best hits (paging). fields: which of text, title, metadata,
                 scores to return (default all).
        drop_pieces: kinds of query pieces whose lexical weights to ignore: 'punctuation', 'single'
                 (one character), 'fragment' (not word-initial), comma-separated (see encoder/pieces.py).
                 Off by default; the encoder's outputs are unchanged (only the query's sparse weights).
        Every candidate is scored exactly on every signal asked for, whichever index found it.
        An empty or whitespace-only query is an InputError (it has nothing to match).
        """
        options = dict(k=k, mode=mode, weights=weights, depths=depths, fusion=fusion, rrf_k=rrf_k, explain=explain,
                       all_scores=all_scores, with_text=with_text, max_length=max_length, params=params,
                       filter=filter, offset=offset, fields=fields, drop_pieces=drop_pieces)
        if not isinstance(query, str):
            # the old shape-by-input call: kept for one release
            warnings.warn("SearchIndex.search(list of queries) is deprecated: use search_many(queries), which "
                          "returns one list of hits per query", DeprecationWarning, stacklevel=2)
            return self.search_many(query, **options)  # type: ignore[return-value]
        return self.search_many([query], **options)[0]

    def search_many(self, queries: Sequence[str], *, k: int = 10, mode: str | None = None,
                    weights: Mapping[str, float] | str | None = None,
                    depths: int | Mapping[str, int] | None = None, fusion: str | None = None,
                    rrf_k: float | None = None,
                    explain: bool = False, all_scores: bool = False, with_text: bool = True,
                    max_length: int | None = None,
                    params: Mapping[str, Mapping[str, Any]] | None = None, filter: Any = None, offset: int = 0,
                    fields: Sequence[str] | None = None,
                    drop_pieces: str | Sequence[str] | None = None) -> list[list[Hit]]:
        """Search with many queries at once: one list of hits per query, in order. They share one encoder
        pass, one search call per index and one re-scoring call per component. Options as in `search`."""
        texts = _query_list(queries)
        if not texts:
            return []
        filter = Filter.parse(filter)  # once, before the encoder runs: a bad filter fails fast
        batch = self.encoder.encode(texts, kind="query", max_length=max_length)
        return self._search_batch(batch, texts, k=k, mode=mode, weights=weights, depths=depths, fusion=fusion, rrf_k=rrf_k,
                                  explain=explain, all_scores=all_scores, with_text=with_text, params=params,
                                  filter=filter, offset=offset, fields=fields, drop_pieces=drop_pieces)

    def search_groups(self, groups: Sequence[tuple[Sequence[str], Mapping[str, Any]]], *,
                      return_exceptions: bool = False) -> list[Any]:
        """Several `search_many` calls, each with its own options, sharing ONE encoder pass over all their
        queries (the encoder is most of a query's cost, and it is cheaper per query in bigger batches).
        groups: (queries, options) pairs, options as `search_many` takes them. Returns, per group, its list
        of hit lists; with return_exceptions, a group whose options fail gets its exception in its place
        and the other groups are still answered (the server's micro-batcher relies on this)."""
        out: list[Any] = [None] * len(groups)
        todo: dict[Any, list[tuple[int, list[str], dict]]] = {}  # max_length -> groups that can share a pass
        for g, (queries, options) in enumerate(groups):
            try:
                texts = _query_list(queries)
                options = dict(options)
                options["filter"] = Filter.parse(options.get("filter"))
                if not texts:
                    out[g] = []
                    continue
                todo.setdefault(options.pop("max_length", None), []).append((g, texts, options))
            except Exception as e:
                if not return_exceptions:
                    raise
                out[g] = e
        for max_length, members in todo.items():
            try:
                batch = self.encoder.encode([t for _, texts, _ in members for t in texts], kind="query",
                                            max_length=max_length)
            except Exception:  # e.g. one text too long: encode each group alone below, so only its group fails
                batch = None
            start = 0
            for g, texts, options in members:
                try:
                    if batch is None:
                        part = self.encoder.encode(texts, kind="query", max_length=max_length)
                    elif len(members) == 1:
                        part = batch
                    else:
                        part = batch.select(np.arange(start, start + len(texts)))
                    out[g] = self._search_batch(part, texts, **options)
                except Exception as e:
                    if not return_exceptions:
                        raise
                    out[g] = e
                start += len(texts)
        return out

    def _search_batch(self, batch: EncodedBatch, texts: list[str], *, k: int = 10, mode: str | None = None,
                      weights: Mapping[str, float] | str | None = None,
                      depths: int | Mapping[str, int] | None = None, fusion: str | None = None,
                      rrf_k: float | None = None, explain: bool = False, all_scores: bool = False,
                      with_text: bool = True, params: Mapping[str, Mapping[str, Any]] | None = None,
                      filter: Any = None, offset: int = 0, fields: Sequence[str] | None = None,
                      drop_pieces: str | Sequence[str] | None = None) -> list[list[Hit]]:
        """search_many after the encoder (`texts` are the queries `batch` encodes, for the text signal): query
        pieces dropped, stored defaults applied, then searched."""
        if drop_pieces:
            batch = self._drop_query_pieces(batch, drop_pieces)
        if mode is None and weights is None and fusion is None and self.search_defaults is not None:
            stored = self.search_defaults  # fitted by `m3search tune`: weights, fusion and RRF k together
            weights, fusion = stored.weights, stored.fusion
            rrf_k = stored.rrf_k if rrf_k is None else rrf_k
        elif mode is None and weights is None:
            mode = self.default_mode
        fusion = "weighted" if fusion is None else fusion
        rrf_k = DEFAULT_RRF_K if rrf_k is None else rrf_k
        return self.search_encoded(batch, k=k, mode=mode, weights=weights, depths=depths, fusion=fusion,
                                   rrf_k=rrf_k, explain=explain, all_scores=all_scores, with_text=with_text,
                                   params=params, filter=filter, offset=offset, fields=fields, query_texts=texts)

    @property
    def default_mode(self) -> str:
        """The mode of a search that names neither mode nor weights: 'all', unless the model's sparse and multi-vector heads are untrained: then their scores are
        noise, and 'dense' is the better default (an explicit mode or weights is always obeyed)."""
        if getattr(self.encoder, "heads_trained", True):
            # an index created with the optional text (BM25) component searches it too: all+text beat all on
            # the dev sets (bench/results/text_signal.md)
            with_text = {"dense", "sparse", "multivec", "text"} <= set(self._index.components)
            return TEXT_DEFAULT_MODE if with_text else DEFAULT_MODE
        if not self._warned_untrained:
            log.warning("the model's sparse and multi-vector heads are untrained: searching in 'dense' mode "
                        "(ask for another mode explicitly to override)")
            self._warned_untrained = True
        return "dense"

    def _drop_query_pieces(self, batch: EncodedBatch, spec: str | Sequence[str]) -> EncodedBatch:
        """The batch with the lexical weights of the query pieces of some kinds removed (a sparse score sums
        over the tokens query and document share, so this ignores those pieces on both sides)."""
        import dataclasses

        from m3search.encoder.pieces import drop_columns, drop_mask, parse_kinds

        kinds = parse_kinds(spec)
        masks = self.__dict__.setdefault("_piece_masks", {})
        if kinds not in masks:
            # over the vocabulary only: whole-word columns after it (sparse_terms) are never dropped
            vocab = drop_mask(self.encoder.token_strings, self._identity.vocab_size, kinds)
            masks[kinds] = np.r_[vocab, np.zeros(batch.sparse.shape[1] - len(vocab), dtype=bool)]
        return dataclasses.replace(batch, sparse=drop_columns(batch.sparse, masks[kinds]))

    @property
    def search_defaults(self) -> "SearchDefaults | None":
        """The weights (and fusion) stored for this index by `m3search tune`, or None. Read once per
        SearchIndex; a damaged file is an IndexFormatError, never silently ignored."""
        if self._search_defaults is _UNREAD:
            from m3search.indexes.search_defaults import read_search_defaults

            self._search_defaults = read_search_defaults(self.path)
        return self._search_defaults  # type: ignore[return-value]

    def set_search_defaults(self, defaults: "SearchDefaults | None") -> Path | None:
        """Store (or, with None, remove) the search defaults; returns the file written."""
        from m3search.indexes.search_defaults import remove_search_defaults, write_search_defaults

        self._search_defaults = _UNREAD
        if defaults is None:
            remove_search_defaults(self.path)
            return None
        return write_search_defaults(self.path, defaults)

    def tune(self, queries: Any, qrels: Any, **options: Any) -> "TuneReport":
        """Fit this index's fusion weights to judged queries (and store them unless save=False); see
        `m3search.tuner.tune` for the options."""
        from m3search.tuner import tune

        return tune(self, queries, qrels, **options)

    def search_encoded(self, queries: EncodedBatch, **options: Any) -> list[list[Hit]]:
        """Search with queries already encoded (kind='query'), e.g. precomputed; options as in `search`.

        Each call sees the newest commit when it starts, whole, and holds it (an LMDB read transaction and
        pins on its segments) only while it runs: between searches nothing old is kept alive."""
        self._refresh()
        with self._index.snapshot() as snapshot:
            return self._new_planner(snapshot).search(queries, **options)

    def info(self) -> dict[str, Any]:
        """Model, counts, sizes per component and format version, as the index engine reports them."""
        info = self._index.info()
        defaults = self.search_defaults
        info["search_defaults"] = defaults.to_dict() if defaults is not None else None
        return info

    # -- writing ------------------------------------------------------------------------------

    def add(self, docs: Iterable[DocLike], *, batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
            commit_interval: float = DEFAULT_COMMIT_INTERVAL, progress: bool = False,
            after_encoding: Callable[[], None] | None = None) -> AddResult:
        """Encode and add documents; ids already in the index are skipped (and counted), so re-running an
        interrupted add resumes it. Commits every `commit_interval` seconds and at the end; if anything
        fails (a malformed document, an interrupt), the index stays at its last commit. `after_encoding`
        is called when every document is encoded, before the final commit (e.g. `release_encoder`)."""
        return self._write(docs, replace=False, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress, after_encoding=after_encoding)

    def upsert(self, docs: Iterable[DocLike], *, batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
               commit_interval: float = DEFAULT_COMMIT_INTERVAL, progress: bool = False,
               after_encoding: Callable[[], None] | None = None) -> AddResult:
        """Like `add`, but documents whose id is already indexed are re-encoded and replaced."""
        return self._write(docs, replace=True, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress, after_encoding=after_encoding)

    def release_encoder(self) -> None:
        """Drop this object's reference to the loaded encoder, so its memory (weights, tokenizer, runtime:
        ~0.4 GB for m3search-small) can be freed; it is loaded again on next use. Kept when the index
        records no model to load it from (it was built with an encoder object)."""
        if self.model is not None:
            self._encoder = None

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id and commit; returns how many were indexed (unknown ids are ignored)."""
        ids = [str(i) for i in ([ids] if isinstance(ids, str) else ids)]
        with self._writer() as writer:
            n = writer.delete(ids)
            writer.commit()
        self._refresh()
        return int(n)

    def _write(self, docs: Iterable[DocLike], *, replace: bool, batch_size: int, max_length: int | None,
               commit_interval: float, progress: bool, after_encoding: Callable[[], None] | None = None) -> AddResult:
        self.encoder  # noqa: B018  # loaded (and checked) before the writer takes the lock
        writer = self._writer()
        try:  # self.encoder, not a local: after_encoding may release it
            return ingest(writer, docs, lambda chunk: encode_documents(self.encoder, chunk, max_length), replace=replace,
                          batch_size=batch_size, commit_interval=commit_interval, progress=progress,
                          after_encoding=after_encoding)
        finally:
            writer.close()
            self._refresh()

    def _writer(self):
        return _index_class().open(self.path, writable=True, identity=self._identity)

    def _refresh(self) -> None:
        """Drop the snapshot (and the stored search defaults) so the next search sees the latest commit.
        The snapshot is not closed here: a search on another thread may still use it; it closes when
        collected (or when the index closes)."""
        with self._planner_lock:
            self._search_defaults = _UNREAD
            self._snapshot, self._planner = None, None

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        snapshot = self._snapshot
        self._refresh()
        if snapshot is not None and hasattr(snapshot, "close"):
            snapshot.close()
        self._index.close()

    def __enter__(self) -> "SearchIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SearchIndex({str(self.path)!r}, model={self.model!r})"


# -- helpers ----------------------------------------------------------------------------------


def _lazy_strings(ref: "weakref.ref[SearchIndex]"):
    def token_strings(token_ids: Sequence[int]) -> list[str]:
        return ref().encoder.token_strings(token_ids)

    return token_strings


def _load_encoder(model: str | Path | Encoder | None, device: str | None,
                  options: Mapping[str, Any] | None) -> Encoder:
    if not options:
        return load_encoder(model, device=device)
    try:
        return load_encoder(model, device=device, **dict(options))
    except TypeError as e:  # an option this kind of encoder doesn't take
        raise ConfigError(f"the model {str(model or DEFAULT_MODEL)!r} can't take the options {dict(options or {})}: {e}") from e


def _with_terms(options: Mapping[str, Any] | None, scheme: str | None) -> Mapping[str, Any] | None:
    """Encoder options with the sparse term scheme; the default one is left out, so encoders that predate
    the option (or can't take another scheme) load as before."""
    from m3search.encoder.terms import DEFAULT_SCHEME

    if scheme is None or scheme == DEFAULT_SCHEME:
        return options
    return {**dict(options or {}), "sparse_terms": scheme}


def _recorded_terms(path: Path) -> str:
    """The sparse term scheme an index (sharded or not) was built with."""
    if _is_sharded(path):
        from m3search.sharding.layout import read_header
        from m3search.types import EncoderIdentity

        return EncoderIdentity.from_dict(read_header(path)["encoder"]).sparse_terms
    from m3search.indexes.manifest import read_manifest

    return read_manifest(path).identity.sparse_terms


def _check_recorded_terms(path: Path, scheme: str) -> None:
    from m3search.encoder.terms import mismatch_message
    from m3search.errors import EncoderMismatchError

    recorded = _recorded_terms(path)
    if recorded != scheme:
        raise EncoderMismatchError(mismatch_message(path, recorded, scheme))


def _new_index_encoder(model, device, options, scheme: str | None) -> Encoder:
    """The encoder a new index is built with, with the sparse term scheme asked for (an Encoder object
    given as the model must already use it)."""
    encoder = _load_encoder(model, device, _with_terms(options, scheme))
    if scheme is not None and encoder.identity.sparse_terms != scheme:
        raise ConfigError(f"the encoder given uses sparse_terms={encoder.identity.sparse_terms!r}, not {scheme!r}: "
                          f"build it with sparse_terms={scheme!r}, or pass the model's name or folder instead")
    return encoder


def _index_class():
    from m3search.indexes.index import Index  # the engine pulls in FAISS: load it on first use

    return Index


def _is_index(path: Path) -> bool:
    from m3search.indexes.manifest import is_index

    return is_index(path)


def _is_sharded(path: Path) -> bool:
    from m3search.sharding.layout import is_sharded

    return is_sharded(path)


def _sharded(path: Path, model, device, encoder_options, components=None, shards=None, sparse_terms=None):
    """Open (or create, given `shards`) a sharded index: `m3search.sharding.ShardedIndex`."""
    from m3search.sharding import ShardedIndex

    if _is_sharded(path):
        options = _with_terms(encoder_options, _recorded_terms(path))
        index = ShardedIndex(path, device=device, encoder_options=encoder_options,
                             encoder=_load_encoder(model, device, options) if model is not None else None)
        if shards and shards != index.n_shards:
            index.close()
            raise ConfigError(f"the index at {path} has {index.n_shards} shards, not {shards}: re-split it with "
                              f"`m3search shard {path} -o NEW --shards {shards}`")
        return index
    if _is_index(path):
        raise ConfigError(f"the index at {path} is not sharded: split it with `m3search shard {path} -o NEW "
                          f"--shards {shards}`")
    encoder = _new_index_encoder(model, device, encoder_options, sparse_terms)
    ShardedIndex.create(path, encoder.identity, _model_reference(model, encoder), shards, _components(components))
    return ShardedIndex(path, encoder=encoder, device=device, encoder_options=encoder_options)


def _components(components: Mapping[str, dict] | None) -> dict[str, dict]:
    if components is None:
        return {"dense": {}, "sparse": {}, "multivec": {}}
    return {kind: dict(config or {}) for kind, config in components.items()}


def _model_reference(model: str | Path | Encoder | None, encoder: Encoder) -> str | None:
    """What the index records so it can load its encoder again: a name, 'hashing:...' or an absolute folder."""
    if model is None:
        return DEFAULT_MODEL
    if isinstance(model, HashingEncoder):
        return (f"hashing:dim={model.dim},multivec_dim={model.multivec_dim},vocab_size={model.vocab_size},"
                f"seed={model.seed}")
    if isinstance(model, Encoder):
        reference = getattr(model, "reference", None)
        if reference is None:  # open_index will then ask for model=..., naming this
            log.info("the encoder object given has no model reference: open this index with model=...")
        return reference
    name = str(model)
    if name == DEFAULT_MODEL or name == "hashing" or name.startswith("hashing:"):
        return name
    return str(Path(name).expanduser().resolve())


def _query_list(queries: Any) -> list[str]:
    if isinstance(queries, str):
        raise InputError("search_many takes a list of query strings, not one string: use search(query) for one")
    try:
        texts = list(queries)
    except TypeError:
        raise InputError(f"queries must be a list of strings, got {type(queries).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"query at position {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            # an empty query matches nothing: refuse it rather than return arbitrary hits
            raise InputError(f"query at position {i} is empty: give it some text (or leave it out)")
    return texts
