"""The ``carina`` command line: one Typer app, one module per command group."""
