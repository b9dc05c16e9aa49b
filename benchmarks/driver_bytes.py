"""Bytes through the driver per rollout, with 500 KB images, through the Ray executor.

Both directions, each pickled as Ray sends it and summed over the run. To the workers,
each batch the executor hands a worker (one ``enqueue`` actor call):

* **before**: the batch as the executor used to send it, every request carrying its
  problem's image bytes (``(items, client)`` with the requests whole);
* **after**: the batch as it is sent now (``(items, client, images, read_paths)``):
  requests name their images by hash, and the bytes ride along only to a worker that lacks
  them and cannot read them from their files.

Back from the workers, what each ``poll`` call returns (the finished requests' results:
their completions, or an error, or a miss): the same before and after. The **total** is
after plus back, what passes through the driver per rollout.

Three kinds of input, each run:

* ``files``: the problems come from JSONL with one image file each (as most VQA sets
  ship), the default ``[executor] worker_reads_images = "auto"``: the reference carries the
  file's absolute path and the workers read the images themselves (checked by sha256), so
  no image bytes go through the driver;
* ``embedded``: the same problems in memory with their image bytes and nowhere to read
  them from (problems given in Python): the bytes go once per worker;
* ``parquet``: the same problems in a Parquet file with the images embedded as
  ``{bytes, path}`` structs (as Hugging Face ``datasets`` writes them; row groups of 100
  rows), the default ``worker_reads_images = "auto"``: the reference carries the image's
  cell (file, row, column, row group) and the workers read the cells themselves (checked by
  sha256), so no image bytes go through the driver.

Workload: the simulated policy on synthetic VQA problems whose one image is padded to
500 KB (a PNG followed by random bytes, as incompressible as a real JPEG), two Ray
workers, the default search and labels (the calibrated labeller's adaptive batches of 4
rollouts; the pilot is off, ``[labels] learn_floor = false``, so the count of rollouts per
problem is that of the steady state). Problems are routed by rendezvous hashing, so a
problem's image goes to one worker, once.

The bytes of an image are paid once per worker that serves its problems, so per rollout
they are the image's size over the rollouts its problems take: the run is repeated with
``--questions-per-image`` problems sharing one image (chart and VQA sets ask several
questions of one picture).

    python benchmarks/driver_bytes.py [--problems 40] [--image-kb 500] [--workers 2] [--questions-per-image 1 4]
                                      [--modes files embedded parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def padded_problems(n: int, image_bytes: int, seed: int, questions_per_image: int = 1) -> list[Any]:
    """Synthetic problems whose one image is ``image_bytes`` long (a valid PNG, then noise);
    ``questions_per_image`` consecutive problems share one image (as chart and VQA sets do)."""
    from prmtree.engine.records import ProblemImage
    from prmtree.engine.synthetic import generate_problems

    rng = random.Random(seed)
    out: list[Any] = []
    for i, problem in enumerate(generate_problems(n, seed=seed)):
        if i % questions_per_image:
            images = out[-1].images
        else:
            images = tuple(ProblemImage(im.data + rng.randbytes(max(0, image_bytes - len(im))), im.path, im.stamp)
                           for im in problem.images)
        out.append(type(problem)(problem.id, problem.question, problem.answer, images, problem.answer_type,
                                 problem.meta))
    return out


def write_files(problems: list[Any], directory: Path) -> Path:
    """``problems`` as JSONL beside one file per distinct image (problems sharing an image
    share its file); returns the JSONL's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "images").mkdir(exist_ok=True)
    names: dict[int, str] = {}
    with (directory / "problems.jsonl").open("w", encoding="utf-8") as handle:
        for problem in problems:
            image = problem.images[0]
            name = names.get(id(image))
            if name is None:
                name = names[id(image)] = f"images/{problem.id}.png"
                (directory / name).write_bytes(image.data)
            handle.write(json.dumps({"id": problem.id, "question": problem.question, "image": name,
                                     "answer": problem.answer, "answer_type": problem.answer_type,
                                     "meta": problem.meta}) + "\n")
    return directory / "problems.jsonl"


def write_parquet(problems: list[Any], directory: Path, row_group_size: int = 100) -> Path:
    """``problems`` as one Parquet file with each image embedded as a ``{bytes, path}`` struct
    (problems sharing an image hold the same bytes); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"id": p.id, "question": p.question, "answer": p.answer, "answer_type": p.answer_type,
             "meta": json.dumps(p.meta), "image": {"bytes": p.images[0].data, "path": f"{p.id}.png"}}
            for p in problems]
    path = directory / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


class CountedPolls:
    """A worker's actor handle whose ``poll`` results are pickled (as Ray sends them back) and
    their bytes added to ``counts["back_bytes"]``; every other call goes to the handle."""

    def __init__(self, handle: Any, counts: dict[str, Any]) -> None:
        self.handle = handle
        self.counts = counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    @property
    def poll(self) -> Any:
        return self

    def remote(self, *args: Any) -> Any:  # ``poll.remote(...)``: awaited by the executor
        return self._counted(self.handle.poll.remote(*args))

    async def _counted(self, ref: Any) -> Any:
        results = await ref
        self.counts["polls"] += 1
        self.counts["back_bytes"] += len(pickle.dumps(results, protocol=5))
        return results


def counting_polls(counts: dict[str, Any]) -> Any:
    """Patch :class:`RayExecutor` so that its workers' handles count what ``poll`` returns
    (wrapped once started, unwrapped before they are let go: ``ray.kill`` wants the handle);
    returns a function that undoes the patch."""
    from prmtree.rollout_workers.ray.executor import RayExecutor

    start, let_go = RayExecutor.start, RayExecutor._let_workers_go

    def started(self: RayExecutor) -> None:
        start(self)
        for worker in self.workers:
            worker.actor = CountedPolls(worker.actor, counts)

    def let_workers_go(self: RayExecutor) -> None:
        for worker in self.workers:
            if isinstance(worker.actor, CountedPolls):
                worker.actor = worker.actor.handle
        let_go(self)

    RayExecutor.start, RayExecutor._let_workers_go = started, let_workers_go  # type: ignore[method-assign]

    def undo() -> None:
        RayExecutor.start, RayExecutor._let_workers_go = start, let_go  # type: ignore[method-assign]

    return undo


def measure(problems: list[Any], workers: int, trees_in_flight: int, mode: str = "embedded") -> dict[str, Any]:
    import prmtree
    from prmtree.rollout_workers.ray.executor import RayExecutor

    counts = {"batches": 0, "requests": 0, "rollouts": 0, "before_bytes": 0, "after_bytes": 0,
              "image_payload_bytes": 0, "batch_rollouts_hist": {}, "polls": 0, "back_bytes": 0}
    original = RayExecutor._with_image_refs

    def counted(self: RayExecutor, worker: Any, items: list) -> Any:
        read_paths = self.reads_images and worker.reads_paths  # as ``_send`` sends it
        out, images = original(self, worker, items)
        counts["batches"] += 1
        counts["requests"] += len(items)
        rollouts = sum(r.n for _, r in items)
        counts["rollouts"] += rollouts
        for _, r in items:
            counts["batch_rollouts_hist"][r.n] = counts["batch_rollouts_hist"].get(r.n, 0) + 1
        counts["before_bytes"] += len(pickle.dumps((items, self.client), protocol=5))
        counts["after_bytes"] += len(pickle.dumps((out, self.client, images, read_paths), protocol=5))
        counts["image_payload_bytes"] += sum(len(b) for b in (images or {}).values())
        return out, images

    RayExecutor._with_image_refs = counted  # type: ignore[method-assign]
    undo_polls = counting_polls(counts)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source: Any = (write_files(problems, Path(tmp) / "data") if mode == "files"
                           else write_parquet(problems, Path(tmp) / "data") if mode == "parquet" else problems)
            start = time.perf_counter()
            summary = prmtree.run(
                source, policy="simulated", policy_args={"latency_s": 0.02}, out=Path(tmp) / "out", seed=3,
                config_overrides={
                    "labels": {"learn_floor": False},
                    "executor": {"kind": "ray", "workers": workers, "num_cpus_per_worker": 0,
                                 "trees_in_flight": trees_in_flight},
                    "output": {"image_mode": "path"},
                },
            )
            elapsed = time.perf_counter() - start
            from prmtree.engine.output.manifest import load_manifest

            executor = load_manifest(Path(tmp) / "out" / "manifest.json").stats["executor"]
    finally:
        RayExecutor._with_image_refs = original  # type: ignore[method-assign]
        undo_polls()
    rollouts = counts["rollouts"]
    return {
        "mode": mode,
        "problems": len(problems),
        "rollouts_sent": rollouts,
        "run_rollouts": summary.rollouts,
        "rollouts_per_problem": round(rollouts / len(problems), 1),
        "batches": counts["batches"],
        "requests": counts["requests"],
        "rollouts_per_request": {str(k): v for k, v in sorted(counts["batch_rollouts_hist"].items())},
        "before_bytes_per_rollout": round(counts["before_bytes"] / rollouts),
        "after_bytes_per_rollout": round(counts["after_bytes"] / rollouts),
        "after_image_bytes_per_rollout": round(counts["image_payload_bytes"] / rollouts),
        "after_request_bytes_per_rollout": round((counts["after_bytes"] - counts["image_payload_bytes"]) / rollouts),
        "polls": counts["polls"],
        "back_bytes_per_rollout": round(counts["back_bytes"] / rollouts),
        "total_bytes_per_rollout": round((counts["after_bytes"] + counts["back_bytes"]) / rollouts),
        "reduction": round(counts["before_bytes"] / max(1, counts["after_bytes"]), 1),  # to the workers
        "images_sent": executor["images_sent"],
        "images_read_by_workers": executor["images_read_by_workers"],
        "image_path_misses": executor["image_path_misses"],
        "image_resends": executor["image_resends"],
        "resubmissions": executor["resubmissions"],
        "min_tree_affinity": executor["min_tree_affinity"],
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--image-kb", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees-in-flight", type=int, default=16)
    parser.add_argument("--questions-per-image", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--modes", nargs="+", choices=["files", "embedded", "parquet"],
                        default=["files", "embedded", "parquet"])
    parser.add_argument("--out", type=Path, default=RESULTS / "driver_bytes.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of --out in modes not run now (add a mode without re-running the others)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    runs = []
    try:
        for mode in args.modes:
            for per_image in args.questions_per_image:
                problems = padded_problems(args.problems, args.image_kb * 1000, seed=7, questions_per_image=per_image)
                runs.append({"questions_per_image": per_image,
                             **measure(problems, args.workers, args.trees_in_flight, mode)})
    finally:
        ray.shutdown()
    if args.merge and args.out.exists():
        kept = [r for r in json.loads(args.out.read_text())["runs"] if r["mode"] not in args.modes]
        runs = kept + runs
    report = {"benchmark": "driver_bytes", "image_kb": args.image_kb, "workers": args.workers,
              "trees_in_flight": args.trees_in_flight, "labels": "calibrated, adaptive batches, pilot off",
              "target_bytes_per_rollout": 2048, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    for run in runs:
        met = "met" if run["total_bytes_per_rollout"] <= report["target_bytes_per_rollout"] else "NOT met"
        print(f"{run['mode']}, {run['questions_per_image']} question(s) per image: "
              f"{run['after_bytes_per_rollout']:,} B per rollout to the workers + {run['back_bytes_per_rollout']:,} "
              f"back = {run['total_bytes_per_rollout']:,} (target {report['target_bytes_per_rollout']:,}: {met})")


if __name__ == "__main__":
    main()
