"""edgefleet's protocol packages, one per version (``v1``)."""
