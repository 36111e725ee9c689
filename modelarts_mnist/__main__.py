"""`python -m modelarts_mnist` runs the CLI."""
from .cli import main

main()
