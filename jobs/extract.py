"""Ray job entrypoint: ``python jobs/extract.py CONFIG [--store URL] [--max-tokens N]``.

Submit with ``ray job submit --working-dir . -- python jobs/extract.py jobs/configs/demo.yaml``;
it joins the cluster at RAY_ADDRESS (set by Ray for submitted jobs) or starts a local one.
"""

import sys

from actstore.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
