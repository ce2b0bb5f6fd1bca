"""Suite-wide settings.

Hypothesis runs without its per-example deadline: the suite shares two cores with whatever else the
machine runs, and a timing threshold inside a unit test fails on load, not on a defect (speed is
measured in ``benchmarks/``). Example counts stay as each test sets them.
"""

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("clipfl", deadline=None)
settings.load_profile("clipfl")


@pytest.fixture
def femnist_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real datasets' folder ($CLIPFL_DATA, else ../shared/data), set as CLIPFL_DATA for the test;
    the test is skipped, saying where it looked, when FEMNIST is not there."""
    data = Path(os.environ.get("CLIPFL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data / "femnist").is_dir():
        pytest.skip(f"the FEMNIST data is not at {data}/femnist (set CLIPFL_DATA)")
    monkeypatch.setenv("CLIPFL_DATA", str(data))
    return data
