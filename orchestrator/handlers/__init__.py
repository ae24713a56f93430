"""Plain functions behind the gRPC servicers: decoded arguments in, results out."""
