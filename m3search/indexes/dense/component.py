"""Building, merging and opening dense segments.

A segment folder holds:
  dense.json    header: format, version, n, d, structure, file sizes and checksums
  vectors.arr   (n, d) float16, the refinement store: exact scores, re-ranking, merges (a checked array,
                memory-mapped, see segment_files.py)
  ivf.faiss     IVF segments only: FAISS's own index file (IVF-PQ fast-scan by default)
  hnsw.faiss    HNSW segments only: FAISS's IndexHNSWSQ (graph + fp16 codes, the store's exact values);
                such segments are version 2, which older m3search refuses cleanly
Everything is built from the fp16 store, so merging segments gives what building from the kept documents
would: the same store and, for flat and IVF segments, the same searcher. An HNSW merge whose first source
keeps every document extends a copy of that source's graph with the other documents (HNSW is built by
insertion anyway: the graph is one a build could have made, its levels drawn anew) rather than rebuilding
it, so merging a few new documents into a large segment costs about the new documents, not the whole
segment (the merge policy relies on it to keep the number of graphs small: merge_policy.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np

from m3search.errors import IndexFormatError, InputError
from m3search.indexes import segment_files as sf
from m3search.indexes.base import ComponentType, SegmentReader
from m3search.indexes.dense.config import Structure, choose_structure, validate_config
from m3search.indexes.dense.reader import _ROWS, DenseSegmentReader
from m3search.indexes.faiss_support import faiss_threads, quiet_training
from m3search.indexes.fsutil import fsync_dir, fsync_file, write_json
from m3search.indexes.inputs import check_dense, check_ids
from m3search.types import EncodedBatch

logger = logging.getLogger(__name__)

FORMAT = "m3search.dense"
VERSION = 3  # 3: adds the hnsw structure (other structures are still written as 2); 2: checked arrays
HEADER = "dense.json"
STORE = "vectors.arr"
IVF = "ivf.faiss"
HNSW = "hnsw.faiss"


class DenseComponent(ComponentType):
    """Dense vectors: exact flat search while a segment is small, HNSW over fp16 for mid-sized segments,
    IVF-PQ + exact fp16 re-ranking for the largest. Config keys: `m3search.indexes.dense.config.DEFAULTS`."""

    kind = "dense"

    @classmethod
    def validate_config(cls, config: dict) -> dict:
        return validate_config(config)

    def searched_alone(self, meta: dict) -> bool:
        # flat segments are scanned together in one pass (multiseg.py); a graph or IVF is searched on its own
        return meta.get("structure", {}).get("kind", "flat") != "flat"

    def build(self, path: Path, batch: EncodedBatch, shared: Path) -> dict:
        x = check_dense(batch.dense, what="dense segment", unit=False)
        path = Path(path)
        chunks = (x[lo : lo + _ROWS] for lo in range(0, len(x), _ROWS))
        return self._write(path, len(x), x.shape[1], chunks)

    def merge(self, path: Path, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], shared: Path) -> dict:
        if len(sources) != len(keep) or not sources:
            raise InputError(f"merge needs one keep array per source, got {len(sources)} sources, {len(keep)} keeps")
        dims = {s.vectors(np.zeros(0, np.int64)).shape[1] for s in sources}
        if len(dims) != 1:
            raise InputError(f"dense segments to merge have different dimensions {sorted(dims)}")
        keep = [check_ids(k, s.n_docs, "keep") for s, k in zip(sources, keep)]

        def chunks() -> Iterable[np.ndarray]:
            for src, ids in zip(sources, keep):
                for lo in range(0, len(ids), _ROWS):
                    yield src.vectors(ids[lo : lo + _ROWS])

        n, d = sum(len(k) for k in keep), dims.pop()
        return self._write(Path(path), n, d, chunks(), graph=self._extendable_graph(sources, keep, n, d))

    def open(self, path: Path, meta: dict, shared: Path) -> DenseSegmentReader:
        path = Path(path)
        header = sf.read_header(path / HEADER, FORMAT, VERSION, min_version=2)
        if meta and any(meta.get(key) != header.get(key) for key in ("n", "d", "nbytes", "files")):
            raise IndexFormatError(f"{path / HEADER} does not match the segment metadata recorded by the index")
        files = header["files"]
        store = sf.open_checked(path, STORE, files[STORE])
        if store.shape != (header["n"], header["d"]) or store.dtype != np.float16:
            raise IndexFormatError(f"{path / STORE} holds {store.dtype}{store.shape}, not the recorded float16 store")
        ivf = None
        kind = Structure(**header["structure"]).kind
        if kind != "flat":
            ivf_path = sf.check_file(path, HNSW if kind == "hnsw" else IVF, files[HNSW if kind == "hnsw" else IVF])
            try:
                ivf = faiss.read_index(str(ivf_path))
            except RuntimeError as e:
                raise IndexFormatError(f"{ivf_path} is not a readable FAISS index ({e})") from e
            if ivf.ntotal != header["n"] or ivf.d != header["d"]:
                raise IndexFormatError(f"{ivf_path} holds {ivf.ntotal} x {ivf.d}, not {header['n']} x {header['d']}")
        header = {**header, "nbytes": header["nbytes"] + (path / HEADER).stat().st_size}
        return DenseSegmentReader(path, header, store, ivf, self.config)

    # -- internals --------------------------------------------------------------------------------
    def _extendable_graph(self, sources: Sequence[SegmentReader], keep: Sequence[np.ndarray], n: int,
                          d: int) -> tuple[faiss.Index, int] | None:
        """(a copy of the first source's HNSW index, its document count) when the merged segment is an HNSW
        segment of the same shape that starts with all of that source's documents, in order; else None."""
        first, ids = sources[0], keep[0]
        structure = choose_structure(n, d, self.config)
        if (structure.kind != "hnsw" or not isinstance(first, DenseSegmentReader)
                or first.structure != structure or not np.array_equal(ids, np.arange(first.n_docs))):
            return None
        graph = first.graph_copy()
        return None if graph is None else (graph, first.n_docs)

    def _write(self, path: Path, n: int, d: int, chunks: Iterable[np.ndarray],
               graph: tuple[faiss.Index, int] | None = None) -> dict:
        path.mkdir(parents=True, exist_ok=True)
        store = sf.write_array_chunks(path, STORE, (n, d), np.float16, chunks)
        structure = choose_structure(n, d, self.config)
        files = {STORE: store}
        if structure.kind == "hnsw":
            with faiss_threads(self.config["threads"]):
                files[HNSW] = self._write_hnsw(path, structure, sf.open_checked(path, STORE, store).verify_all().raw,
                                               graph)
        elif structure.kind != "flat":
            with faiss_threads(self.config["threads"]):
                files[IVF] = self._write_ivf(path, structure, sf.open_checked(path, STORE, store).verify_all().raw)
        fields = {"kind": structure.kind, "nlist": structure.nlist, "pq_m": structure.pq_m,
                  "train_sample": structure.train_sample}
        if structure.kind == "hnsw":
            fields["hnsw_m"] = structure.hnsw_m
        header = {
            "format": FORMAT,
            "version": 3 if structure.kind == "hnsw" else 2,
            "n": n,
            "d": d,
            "structure": fields,
            "factory": structure.factory,
            "files": files,
            "nbytes": sum(f["bytes"] for f in files.values()),
        }
        write_json(path / HEADER, header)
        fsync_dir(path)
        logger.info("dense segment %s: %d x %d as %s", path, n, d, structure.factory)
        return header

    def _write_hnsw(self, path: Path, structure: Structure, store: np.ndarray,
                    graph: tuple[faiss.Index, int] | None = None) -> dict:
        """HNSW over fp16 codes: its scores are exactly the store's, so searches need no re-rank. `graph`:
        an index holding the store's first rows already, to extend with the rest."""
        n, d = store.shape
        if graph is not None:
            index, start = graph
        else:
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, structure.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.train(np.zeros((1, d), np.float32))  # fp16 needs no statistics
            start = 0
        index.hnsw.efConstruction = self.config["ef_construction"]
        for lo in range(start, n, _ROWS):
            index.add(np.asarray(store[lo : lo + _ROWS], dtype=np.float32))
        return self._save(path, HNSW, index)

    def _save(self, path: Path, name: str, index: faiss.Index) -> dict:
        tmp = path / (name + ".tmp")
        faiss.write_index(index, str(tmp))
        fsync_file(tmp)
        tmp.rename(path / name)
        return sf.describe(path / name)

    def _write_ivf(self, path: Path, structure: Structure, store: np.ndarray) -> dict:
        n, d = store.shape
        rng = np.random.default_rng(self.config["seed"])
        sample = np.sort(rng.choice(n, size=structure.train_sample, replace=False))
        index = faiss.index_factory(d, structure.factory, faiss.METRIC_INNER_PRODUCT)
        quiet_training(index)
        if hasattr(index, "do_polysemous_training"):
            index.do_polysemous_training = False  # slow, and only useful for Hamming filtering
        for holder in (index, getattr(index, "pq", None)):
            if getattr(holder, "cp", None) is not None:
                holder.cp.seed = self.config["seed"]
        index.train(np.asarray(store[sample], dtype=np.float32))
        for lo in range(0, n, _ROWS):
            index.add(np.asarray(store[lo : lo + _ROWS], dtype=np.float32))
        return self._save(path, IVF, index)
