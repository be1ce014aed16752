"""Stage 2-3: index writers and the on-disk index (dense FAISS, learned-sparse inverted index,
compressed token-vector store, LMDB document store), segment by segment."""
