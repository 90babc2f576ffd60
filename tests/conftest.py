import os

import pytest
import torch

# No network in tests: W&B never goes online, whatever the user's environment says.
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
