"""The public API is small and complete: every name in ``__all__`` exists, nothing else is public."""

import streamflow


def test_all_names_are_importable():
    for name in streamflow.__all__:
        assert getattr(streamflow, name) is not None


def test_public_api_is_the_documented_one():
    assert set(streamflow.__all__) == {
        "END",
        "ConfigError",
        "Context",
        "Drop",
        "Flow",
        "FlowError",
        "Message",
        "Operator",
        "RowError",
        "RunError",
        "RunResult",
        "SetupError",
        "State",
        "StreamflowError",
        "run",
    }


def test_run_is_callable_although_it_is_also_the_cli_module():
    import streamflow.run as module

    assert callable(streamflow.run) and callable(module) and hasattr(module, "main")
