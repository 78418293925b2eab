"""`python -m tagstream.tools.cli`: how torchrun launches `train` and `embed`."""

from tagstream.tools.cli import main

main()
