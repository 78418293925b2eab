"""The `tagstream` command line: thin click commands over library calls."""

__version__ = "0.1.0"
