"""`python -m cds …`: the same command line as the `cds` console script, for an environment whose
scripts folder is not on PATH."""
from cds.cli import run

run()
