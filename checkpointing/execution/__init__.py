"""The engine's torch half, what a board runs: splitting a model into stages, profiling them,
executing a schedule, accounting for live tensors and the process's memory, training steps and
the models by name."""
