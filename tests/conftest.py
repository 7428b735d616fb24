"""pytest configuration shared by every test file: hypothesis profiles and NumPy print options.

Profiles (select with HYPOTHESIS_PROFILE=<name>; default "dev"):
  dev  -- deadline off (first calls of a compiled kernel and shared CI machines make timing
          noisy), at most 25 examples unless a test asks otherwise;
  ci   -- the same, plus derandomize=True so CI runs are reproducible, and no example database.
Neither profile suppresses health checks or hides failures.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import settings

__all__: list[str] = []

settings.register_profile("dev", deadline=None, max_examples=25)
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Failure messages print arrays: keep them short but with enough digits to see the error.
np.set_printoptions(precision=10, linewidth=120, threshold=200)
