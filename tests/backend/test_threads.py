"""Thread choice: an explicit count wins, else one thread per CPU the load average leaves free (1..cores)."""

from __future__ import annotations

import pytest

from dreamstill.backend.threads import ENV_VAR, choose_threads, physical_cores, usable_cpus


@pytest.mark.parametrize(
    "load, cpus, cores, expected",
    [
        (11.8, 2, 2, 1),  # the shared 2-core machine under load: one thread, not two fighting
        (0.1, 2, 2, 2),  # idle: every core
        (0.6, 2, 2, 1),  # round(1.4)
        (0.1, 16, 8, 8),  # hyper-threads do not count
        (3.0, 8, 8, 5),
        (40.0, 64, 32, 24),
    ],
)
def test_load_leaves_this_many_threads(load, cpus, cores, expected):
    choice = choose_threads(env={}, load=load, cpus=cpus, cores=cores)
    assert choice.threads == expected
    assert f"load {load:.1f} on {cpus} CPUs" in choice.reason


def test_explicit_choices_win_in_order():
    env = {ENV_VAR: "3"}
    assert choose_threads(5, env=env, load=50.0, cpus=2, cores=2).threads == 5
    assert str(choose_threads(1, env=env)) == "1 torch thread (--threads)"
    assert choose_threads(None, env=env, load=50.0, cpus=2, cores=2).threads == 3
    assert choose_threads(None, env={ENV_VAR: "  "}, load=0.0, cpus=4, cores=4).threads == 4


@pytest.mark.parametrize("bad", [0, -2, "two", "1.5", True])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="whole number of threads >= 1"):
        choose_threads(bad, env={})
    if not isinstance(bad, bool):
        with pytest.raises(ValueError, match=ENV_VAR):
            choose_threads(None, env={ENV_VAR: str(bad)})


def test_no_load_average_means_every_core():
    from dreamstill.backend import threads

    real = threads.load_average
    threads.load_average = lambda: None
    try:
        choice = choose_threads(env={}, cpus=4, cores=4)
    finally:
        threads.load_average = real
    assert choice.threads == 4 and "no load average" in choice.reason


def test_machine_counts_are_sane():
    assert 1 <= physical_cores() <= usable_cpus()
