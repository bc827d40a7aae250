import sys
from pathlib import Path

# tests/tiny.py is imported as a plain module by the test files.
sys.path.insert(0, str(Path(__file__).parent))

import torch

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
# OpenMP spin-waiting makes small ops (a [k, 6] softmax) take milliseconds.
torch.set_num_threads(1)
