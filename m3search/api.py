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

import dataclasses
import logging
import threading
import time
import weakref
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, overload

from m3search.data.corpus import Document, document_from_mapping
from m3search.encoder import DEFAULT_MODEL, Encoder, HashingEncoder, load_encoder
from m3search.errors import ConfigError, EncoderMismatchError, IndexFormatError, InputError, ModelError
from m3search.planner import DEFAULT_MODE, Hit, Planner
from m3search.planner.filters import Filter
from m3search.types import EncodedBatch

log = logging.getLogger(__name__)

DocLike = Document | Mapping[str, Any] | tuple[str, str]

DEFAULT_BATCH_SIZE = 128  # documents per encoder call (which sorts them by length) and per add to the index
DEFAULT_COMMIT_INTERVAL = 120.0  # seconds between commits of a long add, so an interrupted run resumes


@dataclasses.dataclass(frozen=True)
class AddResult:
    """What an add or upsert did: documents written, and those left alone because their id was indexed."""

    added: int
    skipped: int = 0
    replaced: int = 0
    generation: int = 0


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
) -> "SearchIndex":
    """Create an index at `path` (or open the one already there) and add `docs` to it.

    docs:  dicts with an id (`id`, `docid` or `_id`), a `text` and optionally a `title` and `metadata`;
           `(id, text)` tuples; or `m3search.data.Document`s. Ids already in the index are skipped, so
           calling this again after an interruption resumes where the last commit left off.
    model: None for the bundled default ('m3search-small'), a folder in BGE-M3's layout, 'hashing:dim=..'
           for the deterministic test encoder, or an Encoder. The index records the name or folder so that
           `open_index(path)` can load it again (an Encoder object is recorded only if it has a `reference`
           attribute; otherwise pass it to open_index too). An existing index must be given the same model
           it was built with, or none.
    components: per-component configs, e.g. {'dense': {...}, 'sparse': {...}, 'multivec': {...}}
           (default: all three with their defaults). Only used when the index is created.
    encoder_options: passed to `load_encoder` (e.g. {'batch_tokens': 8192} for an M3 model).
    """
    path = Path(path)
    if _is_index(path):
        index = open_index(path, model, device=device, encoder_options=encoder_options)
    else:
        encoder = _load_encoder(model, device, encoder_options)
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
    unless `model` is given (it must match the index's encoder identity)."""
    path = Path(path)
    if not _is_index(path):
        what = "does not exist" if not path.exists() else "is not an m3search index (no manifest.json)"
        raise IndexFormatError(f"index {str(path)!r} {what}: build one with `m3search index CORPUS -o {path}`")
    encoder = _load_encoder(model, device, encoder_options) if model is not None else None
    return SearchIndex(path, encoder=encoder, device=device, encoder_options=encoder_options)


class SearchIndex:
    """An index on disk with its encoder: add, delete, search. Use as a context manager or call close().

    Searches see the index as of the last commit; `add`, `upsert` and `delete` commit before returning.
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
        self._planner_lock = threading.Lock()
        self._warned_untrained = False

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
                encoder = _load_encoder(self.model, self._device, self._encoder_options)
            except ModelError as e:
                raise ModelError(
                    f"can't load the model {self.model!r} that the index at {self.path} was built with ({e}); "
                    "pass the model explicitly (--model, or model= in Python)"
                ) from e
            self._check_identity(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_identity(self, encoder: Encoder) -> None:
        problems = encoder.identity.mismatches(self._identity)
        if problems:
            raise EncoderMismatchError(
                f"the encoder {encoder.identity.name!r} does not match the one the index at {self.path} was built "
                f"with ({'; '.join(problems)}): use the index's own model ({self.model!r}) or build a new index"
            )

    # -- reading ------------------------------------------------------------------------------

    @property
    def planner(self) -> Planner:
        """A planner over the last commit: a commit made since (by this or any process) gets a new one."""
        with self._planner_lock:
            planner = self._planner
            if planner is not None and planner.snapshot.generation != self._index.generation:
                planner = None  # the old snapshot closes once no search uses it any more
            if planner is None:
                self._snapshot = self._index.snapshot()
                # no reference back to self: a replaced planner (and its snapshot) is freed as soon as the
                # last search using it returns, not at the next cyclic garbage collection
                strings = self._encoder.token_strings if self._encoder is not None else _lazy_strings(weakref.ref(self))
                planner = self._planner = Planner(self._snapshot, token_strings=strings)
            return planner

    def _lazy_token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.encoder.token_strings(token_ids)

    def __len__(self) -> int:
        """Live documents as of the last commit."""
        return int(self.planner.snapshot.n_docs)

    @overload
    def search(self, query: str, *, k: int = ..., mode: str | None = ..., weights: Mapping[str, float] | str | None = ...,
               depths: int | Mapping[str, int] | None = ..., fusion: str = ..., rrf_k: float = ...,
               explain: bool = ..., all_scores: bool = ..., with_text: bool = ...,
               max_length: int | None = ..., params: Mapping[str, Mapping[str, Any]] | None = ...,
               filter: Any = ..., offset: int = ..., fields: Sequence[str] | None = ...) -> list[Hit]: ...

    @overload
    def search(self, query: Sequence[str], *, k: int = ..., mode: str | None = ...,
               weights: Mapping[str, float] | str | None = ..., depths: int | Mapping[str, int] | None = ...,
               fusion: str = ..., rrf_k: float = ..., explain: bool = ..., all_scores: bool = ...,
               with_text: bool = ..., max_length: int | None = ...,
               params: Mapping[str, Mapping[str, Any]] | None = ...,
               filter: Any = ..., offset: int = ..., fields: Sequence[str] | None = ...) -> list[list[Hit]]: ...

    def search(self, query, *, k=10, mode=None, weights=None, depths=None, fusion="weighted", rrf_k=60,
               explain=False, all_scores=False, with_text=True, max_length=None, params=None, filter=None,
               offset=0, fields=None):
        """Search with one query (a string: returns list[Hit]) or many (a list of strings: returns one
        list[Hit] per query, in order; they share one encoder pass and one scan of each index).

        mode:    'dense', 'sparse', 'multivec', 'dense+sparse' or 'all' (the default: dense 1, sparse 0.3,
                 multivec 1; 'dense' for a model whose sparse and multi-vector heads are untrained); or
                 weights such as {'dense': 1, 'sparse': 0.3} / 'dense=1,sparse=0.3'.
        k:       hits per query. depths: candidates from each index (default 100 each; int or
                 {'dense': n, 'sparse': n}). fusion: 'weighted' (default) or 'rrf' (with rrf_k, default 60).
        explain: attach each hit's matched lexical terms. all_scores: score all three components even when
                 the mode uses fewer. with_text: fetch each hit's text and title.
        filter:  a metadata filter such as {'lang': 'de', 'year': {'$gte': 2020}} (see
                 m3search.planner.filters); only matching documents are searched, in every index.
        offset:  skip this many of the best hits (paging). fields: which of text, title, metadata,
                 scores to return (default all).
        Every candidate is scored exactly on every signal asked for, whichever index found it.
        """
        single = isinstance(query, str)
        texts = [query] if single else _query_list(query)
        if not texts:
            return []
        filter = Filter.parse(filter)  # once, before the encoder runs: a bad filter fails fast
        batch = self.encoder.encode(texts, kind="query", max_length=max_length)
        if mode is None and weights is None:
            mode = self.default_mode
        hits = self.search_encoded(batch, k=k, mode=mode, weights=weights, depths=depths, fusion=fusion,
                                   rrf_k=rrf_k, explain=explain, all_scores=all_scores, with_text=with_text,
                                   params=params, filter=filter, offset=offset, fields=fields)
        return hits[0] if single else hits

    @property
    def default_mode(self) -> str:
        """The mode of a search that names neither mode nor weights: 'all', unless the model's sparse and multi-vector heads are untrained: then their scores are
        noise, and 'dense' is the better default (an explicit mode or weights is always obeyed)."""
        if getattr(self.encoder, "heads_trained", True):
            return DEFAULT_MODE
        if not self._warned_untrained:
            log.warning("the model's sparse and multi-vector heads are untrained: searching in 'dense' mode "
                        "(ask for another mode explicitly to override)")
            self._warned_untrained = True
        return "dense"

    def search_encoded(self, queries: EncodedBatch, **options: Any) -> list[list[Hit]]:
        """Search with queries already encoded (kind='query'), e.g. precomputed; options as in `search`."""
        return self.planner.search(queries, **options)

    def info(self) -> dict[str, Any]:
        """Model, counts, sizes per component and format version, as the index engine reports them."""
        return self._index.info()

    # -- writing ------------------------------------------------------------------------------

    def add(self, docs: Iterable[DocLike], *, batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
            commit_interval: float = DEFAULT_COMMIT_INTERVAL, progress: bool = False) -> AddResult:
        """Encode and add documents; ids already in the index are skipped (and counted), so re-running an
        interrupted add resumes it. Commits every `commit_interval` seconds and at the end; if anything
        fails (a malformed document, an interrupt), the index stays at its last commit."""
        return self._write(docs, replace=False, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress)

    def upsert(self, docs: Iterable[DocLike], *, batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
               commit_interval: float = DEFAULT_COMMIT_INTERVAL, progress: bool = False) -> AddResult:
        """Like `add`, but documents whose id is already indexed are re-encoded and replaced."""
        return self._write(docs, replace=True, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=progress)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id and commit; returns how many were indexed (unknown ids are ignored)."""
        ids = [str(i) for i in ([ids] if isinstance(ids, str) else ids)]
        with self._writer() as writer:
            n = writer.delete(ids)
            writer.commit()
        self._refresh()
        return int(n)

    def _write(self, docs: Iterable[DocLike], *, replace: bool, batch_size: int, max_length: int | None,
               commit_interval: float, progress: bool) -> AddResult:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        encoder = self.encoder
        added = skipped = replaced = generation = 0
        bar = _progress_bar(progress)
        writer = self._writer()
        try:
            last_commit = time.monotonic()
            for chunk in _chunks(_as_documents(docs), batch_size):
                present = writer.contains([d.id for d in chunk])
                n_present = int(present.sum())
                if not replace:
                    skipped += n_present
                    chunk = [d for d, p in zip(chunk, present) if not p]
                if chunk:
                    batch = encoder.encode([d.text for d in chunk], kind="passage", max_length=max_length)
                    ids, records = [d.id for d in chunk], [d.record() for d in chunk]
                    (writer.upsert if replace else writer.add)(ids, batch, records)
                    added += len(chunk) - (n_present if replace else 0)
                    replaced += n_present if replace else 0
                if bar is not None:
                    bar.update(len(chunk) + (0 if replace else n_present))
                if time.monotonic() - last_commit >= commit_interval:
                    generation = writer.commit()
                    last_commit = time.monotonic()
                    log.info("committed generation %d (%d documents added so far)", generation, added)
            generation = writer.commit()
        except BaseException:
            writer.rollback()  # what was not committed is dropped: the index stays at its last commit
            raise
        finally:
            writer.close()
            if bar is not None:
                bar.close()
            self._refresh()
        return AddResult(added=added, skipped=skipped, replaced=replaced, generation=int(generation))

    def _writer(self):
        return _index_class().open(self.path, writable=True, identity=self._identity)

    def _refresh(self) -> None:
        """Drop the snapshot so the next search sees the latest commit. It is not closed here: a search
        on another thread may still use it; it closes when collected (or when the index closes)."""
        with self._planner_lock:
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


def _index_class():
    from m3search.indexes.index import Index  # the engine pulls in FAISS: load it on first use

    return Index


def _is_index(path: Path) -> bool:
    from m3search.indexes.manifest import MANIFEST_NAME

    return (path / MANIFEST_NAME).is_file()


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
    try:
        texts = list(queries)
    except TypeError:
        raise InputError(f"query must be a string or a list of strings, got {type(queries).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"query at position {i} is a {type(t).__name__}, not a string")
    return texts


def _as_documents(docs: Iterable[DocLike]) -> Iterator[Document]:
    if isinstance(docs, (str, bytes, Mapping)):
        raise InputError("docs must be a list (or iterable) of documents, not a single " + type(docs).__name__)
    seen: set[str] = set()
    for i, item in enumerate(docs):
        where = getattr(item, "source", None) or f"docs[{i}]"
        if isinstance(item, Document):
            doc = item
        elif isinstance(item, Mapping):
            doc = document_from_mapping(item, where)
        elif isinstance(item, tuple) and len(item) == 2:
            doc = document_from_mapping({"id": item[0], "text": item[1]}, where)
        else:
            raise InputError(
                f"{where}: a {type(item).__name__} is not a document: give {{'id': ..., 'text': ...}} or (id, text)"
            )
        if doc.id in seen:
            raise InputError(f"{where}: duplicate id {doc.id!r} (it appeared earlier in the input): ids must be unique")
        seen.add(doc.id)
        yield doc


def _chunks(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" docs", desc="indexing", dynamic_ncols=True)
