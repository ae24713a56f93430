"""The engine's torch-free half, what the coordinator plans with: the chain model, schedules,
the simulator, the solvers (Revolve, the persistent DP), memory models, the process's budget
terms and the planner. Nothing here imports torch (``tests/unit/checkpointing/test_no_torch.py``)
or the engine's execution half."""
