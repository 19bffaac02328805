"""``python -m mastpipe.cli``: the command line, as the ``mastpipe`` script runs it."""

from mastpipe.cli import main

main()
