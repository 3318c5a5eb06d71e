from __future__ import annotations

from tests.support import ManualClock

import pytest


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
