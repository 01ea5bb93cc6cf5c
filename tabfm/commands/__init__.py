"""Subcommands of the ``tabfm`` command line, one module each."""
