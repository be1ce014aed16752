"""Result writers for `m3search query`: a readable table, JSON lines, and TREC run files."""
from __future__ import annotations

import json
import re
import shutil
import unicodedata
from typing import IO, Sequence

import click

from m3search.errors import InputError
from m3search.planner import COMPONENTS, Hit

_SPACE = re.compile(r"\s+")


def write_table(out: IO[str], qid: str, query: str, hits: Sequence[Hit], explain: bool) -> None:
    """One block per query: rank, fused score, the component scores, docid, and the start of the passage."""
    width = shutil.get_terminal_size((120, 24)).columns
    click.echo(click.style(f"[{qid}] {query}", bold=True), file=out)
    if not hits:
        click.echo("  (no results)", file=out)
        return
    shown = [c for c in COMPONENTS if c in hits[0].scores]
    header = f"{'rank':>4}  {'score':>7}  " + "".join(f"{c:>8}  " for c in shown)
    docid_width = min(max(len("docid"), *(_columns(h.docid) for h in hits)), 30)
    header += f"{'docid':<{docid_width}}  passage"
    click.echo(click.style(header, dim=True), file=out)
    for rank, hit in enumerate(hits, start=1):
        line = f"{rank:>4}  {hit.score:>7.4f}  " + "".join(f"{hit.scores[c]:>8.4f}  " for c in shown)
        docid = _clip(hit.docid, docid_width)
        line += docid + " " * (docid_width - _columns(docid) + 2)
        click.echo(line + _clip(_passage(hit), max(width - _columns(line), 20)), file=out)
        if explain and hit.matched_terms is not None:
            terms = ", ".join(f"{t.token} ({t.query_weight:.2f}\u00d7{t.doc_weight:.2f})" for t in hit.matched_terms)
            click.echo(_clip(f"{'':6}matched: {terms or '(no shared terms)'}", width), file=out)
    click.echo("", file=out)


def json_record(qid: str, query: str, hits: Sequence[Hit], text: bool, start: int = 1) -> str:
    """{"qid", "query", "hits": [{"rank", "docid", "score", "scores": {...}, ...}]} as one line; ranks count
    from `start` (offset + 1 when paging)."""
    rows = []
    for rank, hit in enumerate(hits, start=start):
        rows.append({"rank": rank, **hit.to_dict(text=text)})
    return json.dumps({"qid": qid, "query": query, "hits": rows}, ensure_ascii=False)


def trec_lines(qid: str, hits: Sequence[Hit], run_name: str) -> list[str]:
    """Standard TREC run lines: `qid Q0 docid rank score run_name` (what trec_eval and pytrec_eval read)."""
    if _SPACE.search(qid):
        raise InputError(f"query id {qid!r} contains whitespace, which a TREC run file can't hold: rename it")
    out = []
    for rank, hit in enumerate(hits, start=1):
        if _SPACE.search(hit.docid):
            raise InputError(
                f"document id {hit.docid!r} contains whitespace, which a TREC run file can't hold: "
                "use --json, or re-index with ids without spaces"
            )
        out.append(f"{qid} Q0 {hit.docid} {rank} {hit.score:.6f} {run_name}")
    return out


def _passage(hit: Hit) -> str:
    text = _SPACE.sub(" ", hit.text or "").strip()
    return f"{hit.title} \u2014 {text}" if hit.title else text


def _clip(s: str, width: int) -> str:
    """Cut s to `width` terminal columns (CJK characters take two), marking the cut with an ellipsis."""
    if _columns(s) <= width:
        return s
    out, used = [], 0
    for ch in s:
        w = _columns(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "\u2026"


def _columns(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)
