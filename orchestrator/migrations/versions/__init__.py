"""One module per revision; ``__init__`` only makes this folder ship in the wheel."""
