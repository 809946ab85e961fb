"""Shared services that operators reach through ``ctx``: LLM endpoints and the simulated LLM.

``llm/`` is the client and the LLM service of a run (``llm.service``), ``engines/`` starts vLLM, SGLang
and llama.cpp servers, ``sim/`` is the simulated server, ``sandbox/`` runs tool calls.

Nothing here imports ``streamflow.runtime``: row mode and batch mode use the same services.
"""
