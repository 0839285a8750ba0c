"""The busy-machine note: silent when idle, one sentence with the load and cores when busy."""

import pytest

from playground.busy import Load, busier, machine_load

pytestmark = pytest.mark.unit


def test_idle_machine_says_nothing():
    assert Load(0.5, 2).note() == "" and not Load(1.5, 2).busy


def test_busy_machine_names_its_load_and_cores():
    note = Load(3.1, 2).note()
    assert Load(3.1, 2).busy and "load 3.1 on 2 cores" in note and "measure again" in note
    assert "on 1 core)" in Load(2.0, 1).note()


def test_reading_now_and_the_busier_of_two():
    now = machine_load()
    assert now.cores >= 1 and now.average >= 0
    assert busier(Load(1.0, 2), Load(2.0, 2)).average == 2.0
