"""`python -m m3search.cli ...` runs the same CLI as the `m3search` script."""
from m3search.cli import main

main(prog_name="m3search")
