"""Allocators measured for a board's training process (``edgefleet bench allocator``)."""
