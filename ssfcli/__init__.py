"""The `ssf` command line."""
