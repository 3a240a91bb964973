"""SSF conformance kit: judges peers by the wire alone."""
