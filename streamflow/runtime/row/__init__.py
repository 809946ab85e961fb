"""Row mode: step actors, sinks, coalescing outboxes, the ledger and the driver that runs them.

``docs/architecture.md`` follows a row through these modules.
"""
