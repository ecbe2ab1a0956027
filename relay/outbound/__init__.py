"""Outbound calls: originating one call through ARI into relay's own app, the answering-machine
result Asterisk's AMD() gives, and the outcome of every dial (campaigns build on `Dialer.dial`).

    settings.py   an agent's "outbound" settings (AMD on or off, what to do with a machine)
    outcomes.py   the outcome values, Asterisk's hangup causes, the record of one dial
    dialer.py     the Dialer: originate, pending dials, events to outcomes, the Call on answer

See docs/OUTBOUND.md.
"""

from relay.outbound.outcomes import OUTCOMES, DialOutcome, DialRequest

__all__ = ["OUTCOMES", "DialOutcome", "DialRequest"]
