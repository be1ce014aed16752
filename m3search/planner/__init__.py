"""Stage 4: the query planner: candidates from the dense and sparse indexes, exact re-scoring of every
candidate on every signal asked for, weighted or reciprocal-rank fusion, typed hits."""
