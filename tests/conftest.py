"""Suite-wide settings.

Hypothesis runs without its per-example deadline: the suite shares two cores with whatever else the
machine runs, and a timing threshold inside a unit test fails on load, not on a defect (speed is
measured in ``benchmarks/``). Example counts stay as each test sets them.
"""

from hypothesis import settings

settings.register_profile("clipfl", deadline=None)
settings.load_profile("clipfl")
