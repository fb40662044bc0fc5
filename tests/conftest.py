import os
import warnings

import pytest
import torch

# Keep CPU tests predictable on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
warnings.filterwarnings("ignore", category=FutureWarning, module="fvcore")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
