"""Full-text BM25 (kind "text"): the optional fourth signal beside dense, sparse and multi-vector.

Per-language analysis (`analysis.py`: Unicode words, CJK/Thai bigrams, tantivy's Snowball stemmers), one
inverted index of term frequencies per segment (`component.py`), exact BM25 with the live documents'
statistics at the index level (`reader.py`), as a candidate source and a re-scorer of any candidate.
"""
from m3search.indexes.text.component import TextComponent, TextSegmentReader
from m3search.indexes.text.reader import IndexTextReader, TextQueries

__all__ = ["TextComponent", "TextSegmentReader", "IndexTextReader", "TextQueries"]
