"""SSF 1.0 transmitter service."""
