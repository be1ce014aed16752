"""Stage 4: the query planner: candidates from the dense and sparse indexes, exact re-scoring of every
candidate on every signal asked for, weighted or reciprocal-rank fusion, typed hits."""
from m3search.planner.hits import Hit, MatchedTerm
from m3search.planner.planner import FUSIONS, Planner
from m3search.planner.weights import COMPONENTS, DEFAULT_MODE, MODES, parse_weights, resolve_weights

__all__ = [
    "COMPONENTS",
    "DEFAULT_MODE",
    "FUSIONS",
    "Hit",
    "MODES",
    "MatchedTerm",
    "Planner",
    "parse_weights",
    "resolve_weights",
]
