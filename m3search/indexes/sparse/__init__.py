"""Learned-sparse inverted index (kind "sparse"): 8-bit block-max impacts, exact top-k with block-max
pruning, a forward index for exact re-scoring. On-disk layout: FORMAT.md beside this file."""
from m3search.indexes.sparse.component import SparseComponent
from m3search.indexes.sparse.quantize import Quantizer
from m3search.indexes.sparse.reader import SparseSegmentReader

__all__ = ["SparseComponent", "SparseSegmentReader", "Quantizer"]
