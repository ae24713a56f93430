"""The gRPC protocol of edgefleet: versioned ``.proto`` files and their committed Python stubs."""
