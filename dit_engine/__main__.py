"""``python -m dit_engine [overrides]``: see :mod:`dit_engine.cli`."""

from dit_engine.cli import main

if __name__ == "__main__":
    main()
