"""gRPC servicers: decode a request, call a handler, encode the response; nothing else."""
