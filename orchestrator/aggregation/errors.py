"""The aggregation's own error."""

from __future__ import annotations


class AggregationError(ValueError):
    """Nothing to aggregate, or aggregation settings that make no sense."""
