"""`python -m m3search ...`: the `m3search` command, for environments where the script is not on PATH."""
from m3search.cli import main

main(prog_name="m3search")
