"""The coordinator: registry of boards and memory models, per-board planning, rounds, aggregation.

It plans with the checkpointing engine's solvers and never imports torch.
"""
