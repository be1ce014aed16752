"""File names of BGE-M3's folder layout (see `checkpoint.py`), importable without torch."""

SPEC_FILE = "m3search_model.json"
SPEC_FORMAT = "m3search.model"
SPEC_VERSION = 1
COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"
