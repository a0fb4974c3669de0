"""Job entrypoint: ``python jobs/train_sae.py CONFIG [--store URL] [--out DIR] [--max-tokens N]``.

Trains on the GPU when the process has one (``ray job submit --entrypoint-num-gpus 1 ...``).
"""

import sys

from actstore.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-sae", *sys.argv[1:]]))
