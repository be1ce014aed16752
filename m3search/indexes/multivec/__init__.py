"""The multi-vector component: compressed token vectors (fp16, SQ, PQ, residual PQ) scored by MaxSim."""
from m3search.indexes.multivec.codecs import Codec, code_size, parse_name
from m3search.indexes.multivec.component import MultivecComponent
from m3search.indexes.multivec.config import DEFAULTS
from m3search.indexes.multivec.reader import MultivecSegmentReader

__all__ = ["MultivecComponent", "MultivecSegmentReader", "Codec", "DEFAULTS", "code_size", "parse_name"]
