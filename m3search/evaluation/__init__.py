"""Benchmark loaders (MIRACL, MKQA, MLDR, BEIR), metrics and the evaluation runner behind `m3search bench`."""
