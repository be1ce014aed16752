"""The dense component: FAISS flat / IVF-PQ fast-scan candidates, re-ranked exactly from an fp16 store."""
from m3search.indexes.dense.component import DenseComponent
from m3search.indexes.dense.config import DEFAULTS, Structure, choose_structure
from m3search.indexes.dense.reader import DenseSegmentReader

__all__ = ["DenseComponent", "DenseSegmentReader", "DEFAULTS", "Structure", "choose_structure"]
