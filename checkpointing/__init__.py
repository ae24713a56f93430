"""edgefleet's checkpointing engine: chain, profile, solve, simulate, execute.

Import the modules directly (``checkpointing.solvers.persistent``, ``checkpointing.execute``):
this package imports nothing itself, so a board's training process does not load the solvers'
numba, and the coordinator does not load torch.
"""
