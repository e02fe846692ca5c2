"""``python -m carina`` runs the command line."""

from carina.cli.main import main

main()
