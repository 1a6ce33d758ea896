"""``python -m atomdiff``: the command-line tool, for environments where the ``atomdiff`` script is not installed."""

from atomdiff.cli.main import main

main()
