"""The fleet demo: a coordinator and four capped board agents learn their own viewpoints."""
