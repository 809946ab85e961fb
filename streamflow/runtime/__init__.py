"""The two ways a run executes a flow on Ray, side by side.

``row/`` streams rows one at a time through step actors (the default); ``batch.py`` runs
the same flow as Ray Data ``map_batches`` over blocks (the baseline). Nothing outside
``streamflow.run`` imports this package; operators and pipelines never do.
"""
