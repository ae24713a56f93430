"""Cut a model into a chain of stages (see ``splitter``)."""

from checkpointing.execution.split.splitter import split_model
from checkpointing.execution.split.stage import SplitError, Stage, run_stages

__all__ = ["SplitError", "Stage", "run_stages", "split_model"]
