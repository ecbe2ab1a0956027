"""Outbound campaigns: a list of contacts dialled with one agent at a bounded concurrency and
pace, inside calling hours, retried per outcome, skipping the do-not-call list; their state in
the history's database (migration 0005), so that any process can control them and several
workers or hosts dial them without ever dialling an attempt twice.

    spec.py      a campaign's settings and contacts (JSON or CSV), hours, retry policy, DNC keys
    store.py     the tables and their rules: claims, outcomes, recovery, state changes, DNC
    service.py   a process's store over the history's database (opened on first use)
    engine.py    the worker's greenlet that claims and dials

See docs/OUTBOUND.md "Campaigns".
"""
