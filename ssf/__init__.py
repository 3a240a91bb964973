"""OpenID Shared Signals Framework 1.0 protocol core (CAEP 1.0, RISC 1.0): no I/O.

Public surface: SETs (:mod:`ssf.set`), subjects (:mod:`ssf.subjects`), events
(:mod:`ssf.events`), keys (:mod:`ssf.keys`), wire models (:mod:`ssf.metadata`,
:mod:`ssf.stream`, :mod:`ssf.poll`), errors (:mod:`ssf.errors`), URIs (:mod:`ssf.uris`).
"""

import warnings

from joserfc.errors import SecurityWarning

# RFC 9864 deprecates the polymorphic "EdDSA" name; SSF peers still use it, so we do too.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
