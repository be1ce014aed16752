"""`m3search index`: build an index from a corpus, or add to (resume) an existing one."""
from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from m3search.cli.common import (INDEX_ENV, apply_quiet, explicit_model, max_length_option, model_option, quiet_option,
                                 show_progress, sparse_terms_option, status)
from m3search.errors import IndexLockedError, InputError, M3SearchError
from m3search.indexes.manifest import is_any_index

if TYPE_CHECKING:  # imported lazily in the command, so `--help` stays fast
    from m3search.data import CorpusReader
    from m3search.ingest import DocumentStream


@click.command("index")
@click.argument("corpus", nargs=-1, type=click.Path(allow_dash=True, path_type=str))
@click.option("--output", "-o", "index_path", envvar=INDEX_ENV, required=True, metavar="INDEX",
              help=f"The index folder to create, or to add to if it exists. [env: {INDEX_ENV}]")
@click.option("--sample", is_flag=True, help="Index the bundled multilingual sample corpus (300 passages).")
@click.option("--format", "corpus_format", type=click.Choice(["auto", "jsonl", "tsv"]), default="auto",
              show_default=True, help="Corpus format; 'auto' goes by the file suffix, else by the first line.")
@model_option
@click.option("--batch-tokens", type=click.IntRange(min=1), default=None, metavar="TOKENS",
              help="Token budget of one encoder batch (padding included); lower it to use less memory.")
@max_length_option
@click.option("--max-doc-tokens", type=click.IntRange(min=1), default=None, metavar="TOKENS",
              help="Refuse a text longer than this many tokens unless --max-length cuts it (default 8192).")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True, metavar="N",
              help="Documents encoded and added per step (the encoder sorts each step's pieces by length: "
              "larger steps pad less; on 2,000 short passages 128 padded 24% of tokens, 512 padded 8%).")
@click.option("--replace", is_flag=True, help="Re-encode and replace documents whose id is already indexed "
              "(default: skip them, which is how an interrupted run resumes).")
@click.option("--commit-interval", type=click.FloatRange(min=0), default=120.0, show_default=True,
              metavar="SECONDS", help="Commit at least this often, so an interrupted run loses little.")
@click.option("--shards", type=click.IntRange(min=1), default=None, metavar="N",
              help="Build a sharded index of N shards (documents assigned by a stable hash of their id).")
@click.option("--text", "text_language", default=None, metavar="LANGUAGE",
              help="Also keep a full-text BM25 index (the 'text' signal: --mode all+text, text, ...), its words "
              "analysed as LANGUAGE: multilingual (no stemming, CJK bigrams) or a code with a Snowball stemmer "
              "(en, de, fr, es, ru, ...). Chosen when the index is created.")
@sparse_terms_option
@quiet_option
def index_command(corpus, index_path, sample, corpus_format, model, batch_tokens, max_length, max_doc_tokens,
                  batch_size, replace, commit_interval, shards, text_language, sparse_terms, quiet):
    """Index CORPUS (files, folders, or - for stdin) into the folder INDEX.

    \b
    Formats:
      JSON lines (.jsonl, .jsonl.gz)  {"docid"|"_id"|"id": ..., "title": ..., "text": ...}  (MIRACL, BEIR)
      TSV (.tsv, .tsv.gz)             id<TAB>text[<TAB>title]
      a folder                        every .txt/.md file inside; its path is the id
      -                               stdin, JSON lines or TSV (see --format)
      an ENCODED folder               precomputed by `m3search encode`: indexed without loading a model

    If INDEX exists, documents are added to it; ids it already holds are skipped, so running the same
    command again after an interruption resumes. A malformed record stops the run with its file and
    line; the index keeps everything up to its last commit.

    \b
    Examples:
      m3search index --sample -o sample-index
      m3search index corpus.jsonl.gz -o my-index --model /models/bge-m3
      cat docs.tsv | m3search index - -o my-index
    """
    from m3search import api
    from m3search.data import SAMPLE_CORPUS, CorpusReader
    from m3search.ingest import DocumentStream

    apply_quiet(quiet)
    if sample and corpus:
        raise click.UsageError("give a CORPUS or --sample, not both")
    if not sample and not corpus:
        raise click.UsageError("give a CORPUS to index (files, folders, or - for stdin), or --sample")
    sources = [str(SAMPLE_CORPUS)] if sample else list(corpus)
    from m3search.encoded import is_encoded

    if any(is_encoded(s) for s in sources):
        from m3search.cli.index_encoded import index_encoded_command

        return index_encoded_command(sources, index_path, model, replace, shards, quiet, sparse_terms)
    if sources.count("-") > 1:
        raise click.UsageError("stdin (-) can be read only once")
    reader = CorpusReader(sources, format=corpus_format)
    stream = DocumentStream(reader)  # the API's own normalisation
    docs = iter(stream)
    try:
        first = next(docs, None)  # check there is something before creating an index folder
    except M3SearchError as e:
        raise click.ClickException(f"{e} (nothing was indexed)") from None
    if first is None:
        skipped = _skipped_note(reader, stream)
        raise InputError(f"no documents in {', '.join(sources)}: the corpus is empty" + (f"; {skipped}" if skipped else ""))

    started = time.perf_counter()
    folder = Path(index_path)
    was_index, folder_existed = is_any_index(folder), folder.exists()
    model = explicit_model(model, existing_index=was_index)
    encoder_options = {key: value for key, value in (("batch_tokens", batch_tokens), ("max_doc_tokens", max_doc_tokens))
                       if value} or None
    components = None
    if text_language is not None:
        from m3search.indexes.text.analysis import check_language

        if shards:
            raise click.UsageError("--text is not available with --shards yet (BM25 needs statistics over all shards)")
        components = {"dense": {}, "sparse": {}, "multivec": {}, "text": {"language": check_language(text_language)}}
    index = api.build_index(index_path, model=model, encoder_options=encoder_options, shards=shards,
                            components=components, sparse_terms=sparse_terms)
    if text_language is not None and "text" not in index.info().get("components", {}):
        index.close()
        raise click.UsageError(f"the index at {index_path} was created without a text component; --text applies "
                               "only when an index is created (index into a new folder)")
    failure = None
    try:
        write = index.upsert if replace else index.add
        records, bar = itertools.chain([first], docs), None
        if show_progress(quiet):
            records, bar = _with_bar(records, sources)
        checked = DocumentStream(records, check_ids=False)  # `stream` checks the ids
        extra = {}
        if isinstance(index, api.SearchIndex):  # this run is over with the encoder before its last commit
            extra["after_encoding"] = lambda: _free_encoder(index)
        try:
            result = write(checked, batch_size=batch_size, max_length=max_length,
                           commit_interval=commit_interval, progress=False, **extra)
        finally:
            if bar is not None:
                bar.close()
        total = len(index)
    except (M3SearchError, KeyboardInterrupt) as e:
        failure = str(e) if isinstance(e, M3SearchError) else "interrupted"
        locked = isinstance(e, IndexLockedError)  # nothing was attempted: no resume advice
        kept = len(index)
    finally:
        index.close()
    if failure is not None:
        if locked:
            raise click.ClickException(failure)
        if kept == 0 and not folder_existed:
            shutil.rmtree(folder)  # the empty index this run created: leave nothing behind
            raise _failed(f"{failure} (nothing was indexed)", failure == "interrupted")
        raise _failed(
            f"{failure} (the index at {index_path} stays at its last commit, {_count(kept, 'document')}; "
            "run the same command again to resume)", failure == "interrupted"
        )

    elapsed = time.perf_counter() - started
    verb = "Added" if was_index else "Indexed"
    lines = [f"{verb} {_count(result.added, 'document')} into {index_path} in {elapsed:.1f} s ({total} in the index)."]
    if result.replaced:
        lines.append(f"Replaced {_count(result.replaced, 'document')} already in the index.")
    if result.skipped:
        lines.append(f"Skipped {_count(result.skipped, 'document')} already in the index (--replace re-indexes them).")
    note = _skipped_note(reader, stream)
    if note:
        lines.append(note[0].upper() + note[1:] + ".")
    status("\n".join(lines), quiet)


def _free_encoder(index) -> None:
    """Free the model, tokenizer and runtime (~0.4 GB for m3search-small) before the final commit, whose
    codec training is the run's largest allocation: the command needs no encoder after it."""
    import gc

    from m3search.indexes.heap import release_free_memory

    index.release_encoder()
    gc.collect()
    release_free_memory()


def _failed(message: str, interrupted: bool) -> click.ClickException:
    error = click.ClickException(message)
    if interrupted:
        error.exit_code = 130  # 128 + SIGINT, as shells expect of a command stopped by Ctrl-C
    return error


def _with_bar(docs, sources: list[str]):
    """The documents, counted by a tqdm bar on stderr as they are read (a batch ahead of the encoder at
    most): with a total, percentage and ETA when the corpus size can be counted cheaply."""
    from tqdm import tqdm

    from m3search.data.count import count_records

    bar = tqdm(total=count_records(sources), unit=" docs", desc="indexing", dynamic_ncols=True, smoothing=0.05)

    def counted():
        for doc in docs:
            yield doc
            bar.update(1)

    return counted(), bar


def _skipped_note(reader: CorpusReader, stream: DocumentStream) -> str:
    """'skipped 2 records (no text: ...; the first at x.jsonl:1)', or '' when nothing was skipped."""
    parts = [f"{_count(n, 'record')} ({reason}; the first at {reader.first_skipped[reason]})"
             for reason, n in reader.skipped.items()]
    if stream.skipped_empty:
        parts.append(f"{_count(stream.skipped_empty, 'record')} (no text: missing, empty or only whitespace; "
                     f"the first at {stream.first_empty})")
    return ("skipped " + ", ".join(parts)) if parts else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
