"""``python -m concierge``. Guarded: worker processes started with ``spawn`` (the document
parsers) import the main module again, and must not run the command line a second time."""

from concierge.cli import main

if __name__ == "__main__":
    main()
