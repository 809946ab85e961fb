"""The garbage collector during a row-mode run: start-up's objects frozen, young collections rarer."""

import gc

from streamflow.runtime.row.collector import YOUNG_THRESHOLD, collecting_less


def test_the_driver_process_gets_its_collector_back_as_it_was_after_a_run():
    """The driver may be a user's own process (a notebook, a script calling streamflow.run)."""
    before = gc.get_threshold()
    with collecting_less():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_collector_is_restored_when_a_run_fails():
    before = gc.get_threshold()
    try:
        with collecting_less():
            raise RuntimeError("the run failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
