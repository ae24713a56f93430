"""Cut a model into a chain of stages (see ``splitter``)."""

from checkpointing.split.splitter import split_model
from checkpointing.split.stage import SplitError, Stage, run_stages

__all__ = ["SplitError", "Stage", "run_stages", "split_model"]
