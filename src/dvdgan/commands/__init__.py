"""Subcommands of the ``dvdgan`` command line (see dvdgan.cli)."""
