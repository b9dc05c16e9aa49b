#!/usr/bin/env bash
# Submit a prmtree run to a Ray cluster with `ray job submit`.
#
#   examples/ray_job.sh http://HEAD:8265 data/problems.jsonl /shared/out [more `prmtree run` flags]
#
# The working directory (this checkout, without out/, .git/ and .venv/) is uploaded as the
# job's working_dir, so the input (JSONL, Parquet or a directory) may be relative to it.
# Keep earlier runs' output under out/ or outside the checkout, or it is uploaded too; a
# large input is better given as a path on shared storage. The output directory must be
# on storage the head node can write (a shared file system on a real cluster). Rollout
# workers are started by the driver on the cluster's GPUs (--workers auto: one per GPU, or
# per tensor-parallel group with --policy-arg tensor_parallel_size=N). Pass --drivers N|auto
# for several drivers sharing those workers (see the README's cluster section). SIGTERM
# (`ray job stop`) is a graceful stop: the job waits up to RAY_JOB_STOP_WAIT_TIME_S (set
# here to 120 s) for the trees in flight before Ray kills it.
set -euo pipefail
ADDRESS=${1:?Ray dashboard address, e.g. http://127.0.0.1:8265}
INPUT=${2:?input problems (JSONL, Parquet, directory)}
OUT=${3:?output directory}
shift 3
ray job submit --address "$ADDRESS" \
  --runtime-env-json '{"working_dir": ".", "excludes": ["out/", ".git/", ".venv/"], "env_vars": {"RAY_AUTH_MODE": "disabled", "RAY_JOB_STOP_WAIT_TIME_S": "120"}}' \
  -- python -m prmtree run --input "$INPUT" --out "$OUT" --executor ray --address auto --no-progress "$@"
