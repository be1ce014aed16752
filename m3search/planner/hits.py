"""What a search returns: typed hits, each with its fused score and every component score."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class MatchedTerm:
    """A lexical token found in both the query and the document (for explaining a sparse score)."""

    token: str
    token_id: int
    query_weight: float
    doc_weight: float

    @property
    def contribution(self) -> float:
        """This term's share of the sparse score: query weight times document weight."""
        return self.query_weight * self.doc_weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "token_id": self.token_id,
            "query_weight": self.query_weight,
            "doc_weight": self.doc_weight,
        }


HIT_FIELDS = ("text", "title", "metadata", "scores")  # what `fields=` can choose


@dataclasses.dataclass(frozen=True)
class Hit:
    """One retrieved document.

    score:         the fused score hits are ranked by (weighted sum, or reciprocal-rank fusion).
    scores:        exact component scores, name -> value, for every component the query asked for
                   (all three when `all_scores=True`), whichever index found the document.
    matched_terms: with `explain=True`, the shared lexical tokens, largest contribution first.
    internal_id:   the index's internal id of the document (changes when a document is replaced).
    metadata:      the document's stored metadata (None when it has none or `fields` left it out).
    """

    docid: str
    score: float
    scores: dict[str, float]
    text: str | None = None
    title: str | None = None
    matched_terms: tuple[MatchedTerm, ...] | None = None
    internal_id: int = -1
    metadata: Any = None

    def to_dict(self, text: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: docid, score, scores, then title/text, metadata and matched_terms when present."""
        out: dict[str, Any] = {"docid": self.docid, "score": self.score, "scores": dict(self.scores)}
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if text:
            if self.title is not None:
                out["title"] = self.title
            if self.text is not None:
                out["text"] = self.text
        if self.matched_terms is not None:
            out["matched_terms"] = [t.to_dict() for t in self.matched_terms]
        return out
