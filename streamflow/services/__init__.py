"""Shared services that operators reach through ``ctx``: LLM endpoints and the simulated LLM.

Nothing here imports ``streamflow.runtime``: row mode and batch mode use the same services.
"""
