import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PROMPTINTERN_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["PROMPTINTERN_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("PROMPTINTERN_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("no data directory (set PROMPTINTERN_DATA_DIR)")
    return Path(d)


@pytest.fixture(scope="session")
def data(data_dir) -> Path:
    """The data directory, for tests that need the real files (skips when absent)."""
    if not (data_dir / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip("offline data not available (set PROMPTINTERN_DATA_DIR)")
    return data_dir


@pytest.fixture(scope="session")
def tiny():
    from promptintern.models import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()
