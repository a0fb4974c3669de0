"""Write the RayJob of one extraction: the template next to this file (rayjob.yaml) pointed at your
bucket and corpus, with its jobId derived from exactly the entrypoint's arguments, as
`actstore run-id` derives it (the same parser, so the id is the one the job computes for itself).

    .venv/bin/python infra/kuberay/rayjob.py --store s3://BUCKET/actstore/run1 \
        --corpus 's3://BUCKET/corpus/*.jsonl.zst' > rayjob-run1.yaml
    kubectl apply -f rayjob-run1.yaml

--config is an extract config of this repository (default: the Gemma 2 2B one, which the image
holds under /opt/actstore); --max-replicas sets the most GPU pods the autoscaler may add, and the
job asks for one worker per GPU of them (--max-workers). Placeholder buckets are refused. The
template's comments are kept; only the entrypoint, jobId and maxReplicas lines change.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
REPO = HERE.parents[1]
IMAGE_ROOT = "/opt/actstore"  # the Dockerfile's WORKDIR, where it copies jobs/


def render(store: str, corpus: list[str], *, config: str = "jobs/configs/gemma-2-2b.yaml",
           max_replicas: int | None = None, max_tokens: int | None = None, template: Path = HERE / "rayjob.yaml") -> str:
    """The RayJob manifest as text. Raises actstore's ConfigError for a placeholder bucket."""
    from actstore.cli import run_id_of

    text = template.read_text()
    group = yaml.safe_load(text)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    replicas = max_replicas if max_replicas is not None else int(group["maxReplicas"])
    args = ["--store", store, *(a for glob in corpus for a in ("--corpus", glob)),
            *(["--max-tokens", str(max_tokens)] if max_tokens is not None else []),
            "--max-workers", str(replicas * int(group["rayStartParams"]["num-gpus"]))]
    job_id = run_id_of([str(REPO / config), *args])
    lines = [f"python {IMAGE_ROOT}/jobs/extract.py {IMAGE_ROOT}/{config}",
             *(" ".join(shlex.quote(a) for a in args[i:i + 2]) for i in range(0, len(args), 2))]
    text = re.sub(r"(?m)^(  entrypoint: >-\n)(?:    .*\n)+", lambda m: m.group(1) + "".join(f"    {line}\n" for line in lines),
                  text, count=1)
    text = re.sub(r"(?m)^  jobId: .*$", f"  jobId: {job_id}", text, count=1)
    text = re.sub(r"(?m)^(\s+maxReplicas: )\d+", rf"\g<1>{replicas}", text, count=1)
    spec = yaml.safe_load(text)["spec"]  # what kubectl will read
    assert spec["jobId"] == job_id and shlex.split(spec["entrypoint"])[3:] == args, "the template's layout changed"
    return text


def main(argv: list[str] | None = None) -> int:
    from actstore.errors import ActstoreError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="store URL (s3://...)")
    parser.add_argument("--corpus", action="append", required=True, help="corpus path or glob (repeatable)")
    parser.add_argument("--config", default="jobs/configs/gemma-2-2b.yaml", help="extract config, relative to the repository")
    parser.add_argument("--max-replicas", type=int, help="most GPU pods (default: the template's maxReplicas)")
    parser.add_argument("--max-tokens", type=int, help="cap on document tokens, overriding context.max_tokens")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.store, args.corpus, config=args.config, max_replicas=args.max_replicas,
                                max_tokens=args.max_tokens))
    except ActstoreError as exc:
        print(f"rayjob.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
