"""Job entrypoint: ``python jobs/explain.py STORE --sae S (--latents 1,2 | --densest N) [--config FILE]``.

Joins the cluster at ``RAY_ADDRESS``; the local chat model runs on one actor per GPU when the
cluster has GPUs. Submit it with the same submission id again to resume: finished latents are
found in the store's explanations table by their cache key and skipped.
"""

import sys

from actstore.cli import main

if __name__ == "__main__":
    sys.exit(main(["explain", *sys.argv[1:]]))
