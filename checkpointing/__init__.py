"""edgefleet's checkpointing engine: chain, profile, solve, simulate, execute.

Only the torch-free part is re-exported here, so that the coordinator can plan without torch:
import ``checkpointing.split``, ``checkpointing.profile`` and ``checkpointing.execute`` directly.
"""

from checkpointing.chain import Chain, ChainError
from checkpointing.schedule import Op, OpKind, Schedule
from checkpointing.simulate import ScheduleError, Simulation, simulate
from checkpointing.solvers.baselines import checkpoint_sequential, recompute_all, store_all
from checkpointing.solvers.persistent import PersistentSolution, min_budget, solve_persistent
from checkpointing.solvers.revolve import RevolveSolution, revolve

__all__ = [
    "Chain",
    "ChainError",
    "Op",
    "OpKind",
    "PersistentSolution",
    "RevolveSolution",
    "Schedule",
    "ScheduleError",
    "Simulation",
    "checkpoint_sequential",
    "min_budget",
    "recompute_all",
    "revolve",
    "simulate",
    "solve_persistent",
    "store_all",
]
