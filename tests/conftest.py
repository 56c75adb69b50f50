import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module that asks for it (the executors use an instance already connected, as
    it is), stopped after it so its idle processes cost the other tests nothing; workers see the repository, so
    tests' own job functions import there."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}})
    yield ray
    ray.shutdown()
