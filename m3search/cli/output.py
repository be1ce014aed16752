"""Result writers for `m3search query`: a readable table, JSON lines, and TREC run files."""
from __future__ import annotations

import json
import re
import shutil
import unicodedata
from typing import IO, Sequence

import click

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
    """Standard TREC run lines `qid Q0 docid rank score run_name`, from the one run writer
    (`m3search.evaluation.trec.run_lines`, which the benchmarks use too)."""
    from m3search.evaluation.trec import run_lines

    return list(run_lines(qid, {hit.docid: hit.score for hit in hits}, run_name))


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
