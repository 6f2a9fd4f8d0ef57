"""End-to-end tests: real gateway processes over real sockets, a fake upstream."""
