"""Row mode on Ray: step actors, sinks, coalesced transport, the ledger and the driver loop.

Nothing outside ``streamflow.run`` imports this package; operators and pipelines never do.
"""
