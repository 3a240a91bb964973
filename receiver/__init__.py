"""SSF 1.0 receiver library and service."""
