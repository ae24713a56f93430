"""edgefleet's checkpointing engine: chain, profile, solve, simulate, execute.

Two rooms: ``checkpointing.planning`` (torch-free: chain, schedules, simulator, solvers, memory
models, budget terms, planner; what the coordinator plans with) and ``checkpointing.execution``
(torch: split, profile, execute, meter, training; what a board runs). Import the modules directly
(``checkpointing.planning.solvers.persistent``, ``checkpointing.execution.execute``): these
packages import nothing themselves, so a board's training process does not load the solvers'
numba, and the coordinator does not load torch. The benchmark harness is ``edgefleet.harness``.
"""
