"""Run by test_estimate.py under torchrun (two CPU processes, gloo): one training run per rank,
its measured peak beside the estimator's per-device figure, as $DIST_OUT/rank-N.json.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_memory.py METHOD

The same measurement as tests/estimate_run.py (which says why a fresh process, and why
MALLOC_MMAP_THRESHOLD_), with the library's `train` joining the two processes by itself.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from estimate_run import main  # noqa: E402

OUT = Path(os.environ["DIST_OUT"])
RANK = os.environ.get("RANK", "0")
run = main(sys.argv[1], 8, 128, sharding="ddp", gpus=int(os.environ.get("WORLD_SIZE", "1")))
(OUT / f"rank-{RANK}.json").write_text(json.dumps(run))
