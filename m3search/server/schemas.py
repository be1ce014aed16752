"""Request and response bodies of the HTTP API. They mirror the Python API's arguments and the JSON of
`m3search query --json`; limits that depend on the server's settings are checked in the app."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Body):
    queries: list[str] = Field(..., min_length=1, description="Query texts; searched together in one batch.")
    k: int = Field(10, ge=1, description="Hits per query.")
    mode: str | None = Field(None, description="dense, sparse, multivec, dense+sparse, all; with a text index also text, all+text, ...")
    weights: dict[str, float] | str | None = Field(None, description="Weights instead of a mode.")
    filter: dict[str, Any] | None = Field(None, description='Metadata filter, e.g. {"lang": "de"}.')
    offset: int = Field(0, ge=0, description="Skip this many of the best hits.")
    fields: list[str] | None = Field(None, description="Hit fields to return: text, title, metadata, scores.")
    explain: bool = False
    all_scores: bool = Field(False, description="Score every component, not only the weighted ones.")
    with_text: bool = Field(True, description="Fetch each hit's title and text (see also fields).")
    depths: int | dict[str, int] | None = None
    fusion: Literal["weighted", "rrf"] | None = Field(
        None, description="weighted or rrf (default: the index's tuned defaults, else weighted).")
    rrf_k: float | None = Field(None, gt=0, description="RRF's k (default 60, or the tuned value).")
    params: dict[str, dict[str, Any]] | None = Field(
        None, description='Per-source search knobs, e.g. {"multivec": {"mean_candidates": 200, "nprobe": 16}}.')


class MatchedTermOut(BaseModel):
    token: str
    token_id: int
    query_weight: float
    doc_weight: float


class HitOut(BaseModel):
    rank: int
    docid: str
    score: float
    scores: dict[str, float]
    metadata: Any = None
    title: str | None = None
    text: str | None = None
    matched_terms: list[MatchedTermOut] | None = None


class QueryResult(BaseModel):
    qid: str
    query: str
    hits: list[HitOut]


class SearchResponse(BaseModel):
    results: list[QueryResult]


class Document(BaseModel):
    model_config = ConfigDict(extra="allow")  # other keys are kept as metadata, as in corpus files
    id: str = Field(..., min_length=1)
    text: str
    title: str | None = None
    metadata: dict[str, Any] | None = None


class DocumentsRequest(_Body):
    documents: list[Document] = Field(..., min_length=1)
    upsert: bool = Field(False, description="Replace documents whose id is indexed (else they are skipped).")


class DocumentsResponse(BaseModel):
    added: int
    skipped: int
    replaced: int
    generation: int


class DeleteRequest(_Body):
    ids: list[str] = Field(..., min_length=1)


class DeleteResponse(BaseModel):
    deleted: int


class EncodeRequest(_Body):
    texts: list[str] = Field(..., min_length=1)
    kind: Literal["query", "passage"] = "passage"
    outputs: list[Literal["dense", "sparse", "multivec"]] = ["dense", "sparse", "multivec"]
    max_length: int | None = Field(None, ge=1)


class Encoded(BaseModel):
    dense_vecs: list[float] | None = None
    lexical_weights: dict[str, float] | None = Field(
        None, description="token id (as a string, as FlagEmbedding returns) -> weight")
    tokens: dict[str, str] | None = Field(None, description="token id -> token string, for lexical_weights")
    colbert_vecs: list[list[float]] | None = None


class EncodeResponse(BaseModel):
    model: str | None
    results: list[Encoded]


class ErrorBody(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
