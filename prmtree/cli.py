"""The ``prmtree`` command: a thin layer over :func:`prmtree.run`.

Bad arguments or configuration print one line and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

from prmtree.engine.errors import FatalExecutorError

#: Exit codes. 0: every good problem is labelled (or skipped by design).
EXIT_STOPPED = 1  # the run stopped early (no worker left, circuit breaker): re-run to resume
EXIT_USAGE = 2  # bad arguments, configuration or policy settings: nothing ran
EXIT_SOME_FAILED = 3  # finished, but some problems failed: the same command retries them
EXIT_NO_DATA = 4  # finished, but no training data: no input row usable, or not one step labelled
EXIT_DAMAGED = 1  # ``prmtree verify``: the directory does not read as its manifests say
VERIFY_LIVE_TRIES, VERIFY_LIVE_WAIT_S = 20, 0.25  # verify beside a running flush: look again for up to 5 s
# 128 + the signal: stopped by SIGTERM (143) or SIGINT (130), everything finished saved


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"prmtree: error: {message}\n")
    raise SystemExit(EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


def _int_arg(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        _fail(f"{flag} takes auto or a number, got {value!r}")


def _os_error(exc: OSError) -> str:
    """An I/O failure in one line: what, where, and what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC or "No space left" in str(exc):
        return (f"no space left on device{where}: free some space and run the same command again "
                "(problems saved before the last flush are kept)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{where}"


def _parse_policy_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            _fail(f"--policy-arg takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:  # Python's spellings too: True would otherwise stay the string "True"
            out[key] = _PYTHON_LITERALS.get(raw, raw)
    return out


_PYTHON_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}


def build_parser() -> argparse.ArgumentParser:
    from prmtree.engine.records import ANSWER_TYPES
    from prmtree.engine.registry import EXECUTORS, STRATEGIES
    from prmtree.export import PLACEHOLDER, format_list

    strategies = STRATEGIES.names()
    # "host" is what the driver processes of --executor inline --drivers N use, not a choice
    USER_EXECUTORS = [name for name in EXECUTORS.names() if name != "host"]  # noqa: N806
    parser = _Parser(prog="prmtree", description="Process-reward training data for vision-language reasoning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="synthetic problems + simulated policy, local, under a minute")
    demo.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    demo.add_argument("--problems", type=int, default=60, help="number of synthetic problems (default: 60)")
    demo.add_argument("--strategy", default="omega", choices=strategies)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--latency", type=float, default=0.002, help="simulated seconds per request (default 0.002)")
    demo.add_argument("--no-progress", action="store_true")

    run = sub.add_parser("run", help="search a problem file with a policy and write Parquet shards")
    run.add_argument("--input", required=True, help="problems: a JSONL, JSON or Parquet file, a directory of them, or a Hugging Face "
                     "dataset saved with save_to_disk (image paths relative to the file)")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--policy", help="registered policy name, module:Class, or module:function for a plain "
                     "async def generate(request) (default: config, else simulated)")
    run.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE", help="policy keyword argument")
    run.add_argument("--strategy", choices=strategies)
    run.add_argument("--config", help="TOML run configuration; flags override it")
    run.add_argument("--seed", type=int)
    run.add_argument("--executor", choices=USER_EXECUTORS, help="where rollouts run (default: inline)")
    run.add_argument("--address", help="Ray cluster address (auto, ray://host:10001); none starts a local Ray")
    run.add_argument("--workers", help="Ray rollout workers: auto (one per GPU) or a number")
    run.add_argument("--slice", "--shard", dest="slice",
                     help="process slice i of N of the input (i/N); slices share --out (--shard: its older name)")
    run.add_argument("--drivers", help="drivers, each on a slice of the input: a number, or auto (what --out holds, "
                     "else ray: one per 32 workers; inline: one per 512 sequences the policy serves at once, "
                     "at most one per core); default 1. Ray's share its worker pool; with --executor inline they "
                     "are processes around this one's policy")
    run.add_argument("--force", action="store_true", help="start over if --out holds a run with another config")
    run.add_argument("--rerun-changed", action="store_true",
                     help="redo problems whose input changed since --out labelled them (their old rows are dropped)")
    run.add_argument("--retry-errors", action="store_true",
                     help="retry every bad input row recorded in --out (a row that changed is retried anyway)")
    run.add_argument("--image-mode", choices=["embed", "path"], help="embed image bytes (default) or reference files")
    run.add_argument("--chat-format", action="store_true", help="write the steps table's prompt as chat messages")
    run.add_argument("--no-progress", action="store_true")

    insp = sub.add_parser("inspect", help="statistics of an output directory; --html for a report with trees")
    insp.add_argument("out", help="output directory of a run")
    insp.add_argument("--html", help="write a self-contained HTML report here")
    insp.add_argument("--max-trees", type=int, default=30, help="problems drawn in the HTML report")

    grd = sub.add_parser(
        "grade", help="grade one answer as a run would: verdict, extracted answer, reason (exit 0 whatever the verdict)"
    )
    grd.add_argument("gold", help="the gold answer")
    grd.add_argument("text", help="the model's output (or, with --no-extract, its final answer)")
    grd.add_argument("--answer-type", default="auto",  # the list grade() accepts, so the help cannot fall behind
                     help=f"{', '.join(ANSWER_TYPES[:-1])} or {ANSWER_TYPES[-1]}")
    grd.add_argument("--options", help='multiple-choice options as JSON: {"A": "red", ...} or ["red", ...]')
    grd.add_argument("--no-extract", action="store_true", help="TEXT is already the final answer")
    grd.add_argument("--question", help="the question: a bound (\"at most 12\") states an answer only to one that "
                                        "asks for that extreme (\"the maximum number\")")
    grd.add_argument("--json", action="store_true", help="print the verdict as one JSON object")

    verify_help = ("check every shard against its manifest: exit 1 if one is damaged or stray, else 0, also when "
                   "slices are unfinished or have not run (listed as MISSING)")
    ver = sub.add_parser("verify", help=verify_help, description=verify_help)
    ver.add_argument("out", help="output directory of a run")

    exp = sub.add_parser(
        "export",
        help="write a run's labelled steps in a PRM trainer's format",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="formats:\n" + "\n".join(f"  {name:<14} {description}" for name, description in format_list()),
    )
    exp.add_argument("out", help="output directory of a run")
    exp.add_argument("--format", required=True, choices=[name for name, _ in format_list()],
                     help="see the list of formats below")
    exp.add_argument("--to", required=True,
                     help="file to write (a directory for --format hf); JSONL formats put images in images/ beside it")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing export (never the run itself)")
    exp.add_argument("--allow-partial", action="store_true",
                     help="export a run that is not finished (in progress, stopped, slices not run) with a warning")
    exp.add_argument("--allow-empty", action="store_true",
                     help="write the export even when it holds no record (the run labelled no step, or the format "
                          "leaves every path out); without it nothing is written and the exit code is 4")
    exp.add_argument("--soft", action="store_true", help="Monte-Carlo values as float labels (openrlhf, qwen-prm)")
    exp.add_argument("--keep-flagged", action="store_true",
                     help="trainer formats and stepwise: keep paths where MC and the judge disagreed (consensus "
                          "with on_disagreement = flag); hf and jsonl keep them with a flagged column")
    exp.add_argument("--placeholder", default=PLACEHOLDER, help=f"openrlhf: the step tag (default {PLACEHOLDER})")
    exp.add_argument("--system-prompt", help="visualprm, qwen-prm: the system turn (default: the model's own; "
                     "'' for none: written empty, where InternVL's and Qwen's templates would put in their default)")
    exp.add_argument("--tokenizer", help="qwen-prm: a local tokenizer folder whose chat template renders `text`")
    exp.add_argument("--test-size", type=float, default=0.0, help="hf: share of problems held out as a test split")
    exp.add_argument("--license", default="unknown", help="hf: the dataset card's licence (default: unknown)")
    exp.add_argument("--pretty-name", help="hf: the dataset card's title")

    gen = sub.add_parser("synth", help="write synthetic image-question problems as JSONL + PNGs")
    gen.add_argument("--out", required=True, help="directory for problems.jsonl and images/")
    gen.add_argument("--problems", type=int, default=100)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--min-steps", type=int, default=4)
    gen.add_argument("--max-steps", type=int, default=12)

    trn = sub.add_parser("train", help="train a process reward model on a run's step labels (pip install prmtree[train])")
    trn.add_argument("--data", required=True, help="a prmtree run's directory, an hf export, or a steps .parquet")
    trn.add_argument("--allow-partial", action="store_true",
                     help="train on a run that is not finished (stopped, or slices not run): what it has saved")
    trn.add_argument("--keep-flagged", action="store_true",
                     help="train on the paths a consensus run kept flagged (MC and the judge disagreed), which "
                          "trainer exports leave out (default: left out, held-out metrics too)")
    trn.add_argument("--out", required=True, help="output directory: an HF model + prm_config.json + loss.png")
    trn.add_argument("--model", default="tiny",
                     help="tiny (built from the data, no download; default) or an HF causal LM / VLM path or Hub id")
    trn.add_argument("--labels", choices=["hard", "soft"], default="hard",
                     help="hard: the step labels; soft: calibrated posteriors where present, else MC values (a "
                     "run's directory or an hf export; a stepwise .parquet has neither)")
    trn.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of the whole model")
    trn.add_argument("--lora-rank", type=int, default=16)
    trn.add_argument("--epochs", type=float, default=3.0)
    trn.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: no limit)")
    trn.add_argument("--pretrain-epochs", type=float, default=0.0,
                     help="first train the LM on the training problems' own text (causal-LM loss, see "
                     "--pretrain-text) for this many epochs, a stand-in for a pretrained base under --model tiny (0: none; text models only)")
    trn.add_argument("--pretrain-text", choices=["auto", "tree", "nodes", "paths"], default="auto",
                     help="what pretraining reads: tree (every root-to-leaf path of the training problems' search "
                     "trees, each step in its context: a run directory's nodes table), nodes (the trees' distinct "
                     "steps, each alone), paths (the training paths' text) or auto (default: tree where the data "
                     "has one, else paths)")
    trn.add_argument("--step-logprobs", choices=["auto", "on", "off"], default="auto",
                     help="the reward head also reads the step's token log-probabilities under the model (its "
                     "surprise at the step): auto is on for --model tiny, off for a pretrained model")
    trn.add_argument("--paths", choices=["auto", "steps", "tree"], default="auto",
                     help="what the PRM trains on: steps (the run's labelled paths, each ending at its first wrong "
                     "step), tree (every root-to-leaf path of the search trees, steps after a wrong one labelled "
                     "wrong; a run directory only), auto: tree where the data has one")
    trn.add_argument("--freeze-lm", action="store_true",
                     help="train only the reward head in the fine-tune (after --pretrain-epochs)")
    trn.add_argument("--lm-weight", type=float, default=0.0,
                     help="weight of an auxiliary causal-LM loss on the paths during the PRM fine-tune (0: none)")
    trn.add_argument("--tiny-layers", type=int, default=2, help="--model tiny: Qwen2 layers (default 2)")
    trn.add_argument("--tiny-hidden", type=int, default=128, help="--model tiny: hidden width, a multiple of 32 "
                     "(default 128)")
    trn.add_argument("--lr", type=float, help="learning rate (default 3e-3 tiny, 1e-5 a real model, 2e-4 LoRA)")
    trn.add_argument("--batch-size", type=int, default=16)
    trn.add_argument("--max-length", type=int, default=1024, help="tokens per path; steps past it lose their labels")
    trn.add_argument("--test-share", type=float, default=0.2,
                     help="share of problems held out (an hf export's test split is used when it has one)")
    trn.add_argument("--val-share", type=float, default=0.1,
                     help="share of the training problems set aside to choose the epoch by (default 0.1; 0: none)")
    trn.add_argument("--select", choices=["best", "last"], default="best",
                     help="keep the weights of the epoch that scores best on the validation problems (default), "
                     "or the last ones")
    trn.add_argument("--seed", type=int, default=0)
    trn.add_argument("--marker", default="<step>", help="the step-marker special token (default <step>)")
    trn.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto")
    trn.add_argument("--bf16", action="store_true", help="load a real model in bfloat16")
    trn.add_argument("--save-every", type=int, default=50, help="checkpoint every N optimiser steps")
    trn.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    trn.add_argument("--workers", type=int, default=0, help="Ray Train workers (0: train in this process)")
    trn.add_argument("--gpus-per-worker", type=float, default=0.0)
    trn.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    trn.add_argument("--log-every", type=int, default=10)
    trn.add_argument("--json", action="store_true",
                     help="print the metrics as JSON at the end (stdout holds it alone; progress goes to stderr)")

    sco = sub.add_parser("score", help="score JSONL solutions (or ProcessBench-shaped files) with a trained PRM")
    sco.add_argument("--prm", required=True, help="a directory written by prmtree train")
    sco.add_argument("--input", required=True, help="JSONL: question/problem + steps (ProcessBench, VisualProcessBench)")
    sco.add_argument("--out", required=True, help="JSONL: each input row with step_rewards added")
    sco.add_argument("--device", default="auto")
    sco.add_argument("--batch-size", type=int, default=8)
    sco.add_argument("--threshold", type=float, default=0.5, help="reward below which a step counts as wrong")

    bon = sub.add_parser("bon", help="best of N: sample N solutions per problem, pick one with a PRM, "
                         "compare with majority vote, random and oracle")
    bon.add_argument("--prm", required=True, help="a PRM directory (prmtree train --out), or module:attr naming "
                     "an object with score_batch(items) (or a class / factory making one)")
    bon.add_argument("--input", required=True, help="problems, as for prmtree run")
    bon.add_argument("--policy", help="as for prmtree run (default: config, else simulated)")
    bon.add_argument("--policy-arg", action="append", default=[], metavar="KEY=VALUE", help="policy keyword argument")
    bon.add_argument("--n", default="8", help="solutions per problem, or a list (1,2,4,8,16,32) for the scaling "
                     "curve: sampled once at the largest, smaller N take the first n (default 8)")
    bon.add_argument("--seed", type=int)
    bon.add_argument("--config", help="TOML run configuration (sampling settings, executor, verification)")
    bon.add_argument("--executor", choices=USER_EXECUTORS, help="where solutions are sampled (default: inline)")
    bon.add_argument("--address", help="Ray cluster address (auto, ray://host:10001)")
    bon.add_argument("--json", help="write the results as JSON here")
    bon.add_argument("--png", help="write a plot here: accuracy vs N for several N, bars for one")

    return parser


def _run(args: argparse.Namespace, input_path: Path, overrides: dict[str, Any], progress: bool, total: int | None):
    from prmtree.api import run
    from prmtree.engine.errors import ConfigError, PolicyConfigError
    from prmtree.progress import ProgressReporter
    from prmtree.runner import RunWarning

    reporter = ProgressReporter(total=total, enabled=progress)
    try:
        with reporter, warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)  # the summary prints them under its table
            return run(
                input_path,
                out=args.out,
                config=overrides.pop("config", None),
                on_progress=reporter.progress,
                slice=getattr(args, "slice", None),
                force=getattr(args, "force", False),
                rerun_changed=getattr(args, "rerun_changed", False),
                retry_errors=getattr(args, "retry_errors", False),
                **overrides,
            )
    except (ConfigError, PolicyConfigError) as exc:
        _fail(str(exc))
    except FatalExecutorError as exc:  # finished problems are flushed: a re-run resumes
        if getattr(exc, "summary", None) is not None:  # --drivers: what the other drivers did
            from prmtree.summary import print_summary

            print_summary(exc.summary, None)
        sys.stderr.write(f"prmtree: run stopped: {exc}\n")
        raise SystemExit(EXIT_STOPPED) from None
    except ValueError as exc:  # a policy or strategy refusing its arguments
        _fail(str(exc))
    except OSError as exc:  # a full disk, a read-only --out: finished problems up to the last flush are kept
        _fail(_os_error(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C (or SIGTERM while workers start) before the run started: nothing to save
        signum = getattr(exc, "signum", signal.SIGINT)
        sys.stderr.write("prmtree: interrupted\n" if signum == signal.SIGINT else
                         f"prmtree: stopped by {signal.Signals(signum).name} before the run started: nothing was "
                         "done; run the same command to start again\n")
        raise SystemExit(128 + signum) from None


def cmd_demo(args: argparse.Namespace) -> int:
    from prmtree.engine.output import read_table
    from prmtree.engine.quality import score_paths
    from prmtree.engine.synthetic import generate_problems, write_jsonl
    from prmtree.policies.simulated import SimulatedPolicy
    from prmtree.summary import print_summary

    if args.problems < 1:
        _fail(f"--problems must be at least 1, got {args.problems}")
    if args.latency < 0:
        _fail(f"--latency must be >= 0, got {args.latency}")
    out = Path(args.out)
    problems = generate_problems(args.problems, seed=args.seed)
    _refuse_another_demo(out, {p.id for p in problems})
    overrides = {
        "seed": args.seed,
        "strategy": args.strategy,
        "policy": "simulated",
        "policy_args": {"latency_s": args.latency},
    }
    # The synthetic input is needed only while the run reads it: a demo's rows embed their
    # images (it has no image_mode), so nothing points into it afterwards, failed or stopped.
    data_dir = Path(tempfile.mkdtemp(prefix="prmtree-demo-"))
    try:
        input_path = write_jsonl(problems, data_dir)
        summary = _run(args, input_path, overrides, not args.no_progress, args.problems)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    oracle = SimulatedPolicy()
    by_id = {p.id: p for p in problems}
    quality = score_paths(
        read_table(out, "steps").select(["problem_id", "completions", "labels"]).to_pylist(),
        lambda pid, steps: oracle.first_error(by_id[pid], steps),
    )
    print_summary(summary, quality)
    return _exit_code(summary)


def _refuse_another_demo(out: Path, ids: set[str]) -> None:
    """A demo folder holding problems this demo does not have (made with more --problems
    or another --seed) would resume into a mix: refused in one line."""
    from prmtree.engine.output import load_manifest

    try:
        m = load_manifest(out / "manifest.json")
    except (OSError, ValueError):
        return  # no earlier demo here (an unreadable one is refused by the run itself)
    earlier = set(m.completed) | set(m.skipped) | set(m.failed)
    if earlier - ids:
        _fail(f"{str(out)!r} holds a demo made with {len(earlier)} problems (another --problems or --seed); "
              "use another --out, or remove it to start over")


def cmd_run(args: argparse.Namespace) -> int:
    from prmtree.engine.output import Slice
    from prmtree.summary import print_summary

    if args.slice is not None:
        try:
            Slice.parse(args.slice)
        except ValueError as exc:
            _fail(f"--slice: {exc}")
    input_path = Path(args.input)
    if not input_path.exists():
        _fail(f"input file {args.input!r} not found")
    if args.config and not Path(args.config).exists():
        _fail(f"config file {args.config!r} not found")
    overrides: dict[str, Any] = {"config": args.config}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.strategy:
        overrides["strategy"] = args.strategy
    if args.policy:
        overrides["policy"] = args.policy
    policy_args = _parse_policy_args(args.policy_arg)
    if policy_args:
        overrides["policy_args"] = policy_args
    executor: dict[str, Any] = {}
    if args.executor:
        executor["kind"] = args.executor
    if args.address:
        executor["address"] = args.address
    if args.workers:
        executor["workers"] = args.workers if args.workers == "auto" else _int_arg("--workers", args.workers)
    if args.drivers:
        executor["drivers"] = args.drivers if args.drivers == "auto" else _int_arg("--drivers", args.drivers)
    output: dict[str, Any] = {}
    if args.image_mode:
        output["image_mode"] = args.image_mode
    if args.chat_format:
        output["chat_format"] = True
    if output or executor:
        overrides["config_overrides"] = {k: v for k, v in (("output", output), ("executor", executor)) if v}
    summary = _run(args, input_path, overrides, not args.no_progress, None)
    print_summary(summary, None)
    return _exit_code(summary)


def cmd_bon(args: argparse.Namespace) -> int:
    """Exit 0 when every problem was sampled and scored; 3 when some failed (the table
    counts the rest) or all did; 4 when no input row was usable; 2 for bad arguments, a bad
    PRM or policy; 1 when the backend went down."""
    from prmtree.bon import NothingSampled, best_of_n, check_plotting, parse_ns, print_table, write_png
    from prmtree.engine.errors import ConfigError, PolicyConfigError

    try:
        ns = parse_ns(args.n)
    except ValueError as exc:
        _fail(str(exc))
    if not Path(args.input).exists():
        _fail(f"input file {args.input!r} not found")
    if args.config and not Path(args.config).exists():
        _fail(f"config file {args.config!r} not found")
    for flag, target in (("--json", args.json), ("--png", args.png)):
        if target and not Path(target).resolve().parent.is_dir():
            _fail(f"{flag} {target!r}: its directory does not exist")
    if args.png and Path(args.png).suffix.lower() != ".png":  # before sampling: a plot is a PNG, named as written
        _fail(f"--png {args.png!r}: name a .png file (e.g. bon.png)")
    executor = {k: v for k, v in (("kind", args.executor), ("address", args.address)) if v}
    try:
        if args.png:
            check_plotting()
        result = best_of_n(args.input, args.prm, ns, policy=args.policy, policy_args=_parse_policy_args(args.policy_arg),
                           seed=args.seed, config=args.config,
                           config_overrides={"executor": executor} if executor else None)
    except NothingSampled as exc:
        sys.stderr.write(f"prmtree: bon: {exc}\n")
        raise SystemExit(EXIT_SOME_FAILED if exc.failed else EXIT_NO_DATA) from None
    except (ConfigError, PolicyConfigError, ValueError) as exc:
        _fail(str(exc))
    except FatalExecutorError as exc:
        sys.stderr.write(f"prmtree: bon stopped: {exc}\n")
        raise SystemExit(EXIT_STOPPED) from None
    except KeyboardInterrupt:
        sys.stderr.write("prmtree: interrupted\n")
        raise SystemExit(128 + signal.SIGINT) from None
    print_table(result)
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n")
            print(f"wrote {args.json}")
        if args.png:
            write_png(result, args.png)
            print(f"wrote {args.png}")
    except OSError as exc:
        _fail(_os_error(exc))
    if result.failed:
        sys.stderr.write(f"prmtree: {len(result.failed)} problems failed and are not counted; "
                         "the same command samples them again (seeded: the rest come out the same)\n")
        return EXIT_SOME_FAILED
    return 0


def _exit_code(summary: Any) -> int:
    if summary.stopped_by:
        sys.stderr.write(
            f"prmtree: stopped by {signal.Signals(summary.stopped_by).name}; everything finished is saved: "
            "run the same command again to resume\n"
        )
        return 128 + summary.stopped_by
    if getattr(summary, "unusable", None):
        sys.stderr.write(f"prmtree: {summary.unusable}\n")
        return EXIT_NO_DATA
    if summary.retry_pending:
        futile = getattr(summary, "retry_futile", 0)
        if futile == summary.retry_pending:
            advice = ("a retry does not clear their reasons (not retryable, or an internal error): fix the cause, "
                      "then run the same command again to retry them")
        elif futile:
            advice = (f"run the same command again to retry them, but {futile} of them failed for a reason a retry "
                      "does not clear (not retryable, or an internal error): fix that first")
        else:
            advice = "run the same command again to retry them"
        sys.stderr.write(f"prmtree: {summary.retry_pending} problems failed (reasons above); {advice}\n")
        return EXIT_SOME_FAILED
    if summary.problems_done and summary.steps_labelled == 0:
        sys.stderr.write(
            f"prmtree: nothing was labelled: {summary.problems_done} problems done, 0 labelled steps "
            "(the warnings above say why)\n"
        )
        return EXIT_NO_DATA
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from prmtree.engine.synthetic import generate_problems, write_jsonl

    if args.problems < 1:
        _fail(f"--problems must be at least 1, got {args.problems}")
    try:
        problems = generate_problems(args.problems, args.seed, args.min_steps, args.max_steps)
    except ValueError as exc:
        _fail(str(exc))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        _fail(f"--out {args.out!r} is a file; synth writes a directory (problems.jsonl and images/): "
              "name a directory")
    try:
        path = write_jsonl(problems, args.out)
    except OSError as exc:
        _fail(_os_error(exc))
    print(f"wrote {len(problems)} problems to {path}")
    return 0


def _run_dir(path: str) -> Path:
    """An output directory of a run (a slice's manifest by the layout's names), or a one-line failure."""
    from prmtree.engine.output import scan_manifests

    out = Path(path)
    if not out.exists():
        _fail(f"{path!r} does not exist: name a run's output directory (its --out)")
    if not out.is_dir():
        _fail(f"{path!r} is a file, not a run's output directory (its --out)")
    layout, stray = scan_manifests(out)
    if not layout and stray:
        _fail(f"{path!r} holds no prmtree run: {', '.join(stray)} is no slice's manifest (a run writes "
              "manifest.json or manifest-IIIII-of-NNNNN.json)")
    if not layout:
        _refuse_before_first_flush(path)
        _fail(f"{path!r} holds no prmtree manifest")
    return out


def _refuse_before_first_flush(path: str) -> None:
    """Refuse, in one line, a folder a run started writing and has not flushed yet (no
    manifest, its lock held): it is a run's folder, readable once the first flush is done."""
    from prmtree.engine.output import manifest_layout

    out = Path(path)
    if not out.is_dir() or manifest_layout(out):
        return
    writing = _writing_before_first_flush(out)
    if writing:
        _fail(f"{path!r} holds no manifest yet: a run is writing it ({writing}) and has not finished its "
              "first flush; try again once it has")


def _writing_before_first_flush(out: Path) -> str | None:
    """Who is writing into ``out``, a folder that holds no manifest yet (a run started and has
    not finished its first flush), or None."""
    from prmtree.engine.lock import live_writer

    return next((w for lock in sorted(out.glob(".manifest*.json.lock")) if (w := live_writer(lock))), None)


def _intact_run_dir(path: str) -> Path:
    """A run directory whose shards all match their manifests, or a one-line refusal."""
    from prmtree.export import damaged

    out = _run_dir(path)
    why = damaged(path)
    if why is not None:
        _fail(why)
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    from prmtree.engine.lock import live_writer
    from prmtree.engine.output import (
        STRAY,
        UNLISTED,
        load_manifest,
        manifest_layout,
        missing_slices,
        verify_run,
    )
    from prmtree.engine.output.layout import SHARD_NAME, manifest_slice, shard_slice
    from prmtree.engine.output.verification import FLOORS

    given = Path(args.out)
    if given.is_dir() and not manifest_layout(given) and (writing := _writing_before_first_flush(given)):
        print(f"{args.out}: BEING WRITTEN: a running prmtree ({writing}) has not finished its first flush: nothing "
              "to check yet; verify it again once it has")
        return 0  # unfinished, not damaged
    out = _run_dir(args.out)
    damage = verify_run(out)

    def writer_of(d: Any) -> str | None:
        """The running prmtree writing the slice an unlisted shard's name says it is of (a file no
        run names so, ``extra.parquet``, is nobody's)."""
        if d.manifest != UNLISTED or not d.file or not SHARD_NAME.fullmatch(name := Path(d.file).name):
            return None
        return live_writer(out / shard_slice(name).lock_name)

    # a running flush renames its shards into place before its manifest lists them: look again
    # until it is done (a few seconds at most), and what is still unlisted then is its flush's
    for _ in range(VERIFY_LIVE_TRIES):
        if not any(writer_of(d) for d in damage):
            break
        time.sleep(VERIFY_LIVE_WAIT_S)
        damage = verify_run(out)
    in_flight = [(d, writer) for d in damage if (writer := writer_of(d))]
    damage = [d for d in damage if not any(d is flying for flying, _ in in_flight)]
    for name in manifest_layout(out):
        found = [str(d) for d in damage if d.manifest == name]
        if found:
            more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
            print(f"{name}: DAMAGED: {'; '.join(found[:5])}{more}")
            continue
        m = load_manifest(out / name)
        state = "finished" if m.status == "finished" else "unfinished (run its command again to finish)"
        own = manifest_slice(name)
        if m.status != "finished" and own is not None and (writer := live_writer(out / own.lock_name)):
            state = f"being written by a running prmtree ({writer}): verify it again once that run ends"
        failed = f", {len(m.failed)} failed (its command retries them)" if m.failed else ""
        print(f"{name}: OK: {len(m.shards)} shards, {sum(s['rows'] for s in m.shards):,} rows, "
              f"{len(m.completed):,} problems done{failed}; {state}")
    for s in missing_slices(out):
        if writer := live_writer(out / s.lock_name):
            print(f"{s.manifest_name}: BEING WRITTEN: slice {s.index}/{s.count} is running here ({writer}) and has not "
                  "finished its first flush")
        else:
            print(f"{s.manifest_name}: MISSING: slice {s.index}/{s.count} has not run here; run its command with "
                  f"--slice {s.index}/{s.count}")
    for d in damage:
        if d.manifest == UNLISTED:
            print(f"{d.file}: DAMAGED: {d.problem}")
        elif d.manifest == STRAY:
            print(f"{d.file}: STRAY: {d.problem}")
        elif d.manifest == FLOORS:
            print(f"floors: MIXED: {d.problem}")
    for d, writer in in_flight:
        print(f"{d.file}: BEING WRITTEN: no manifest lists it yet, and a running prmtree ({writer}) is writing its "
              "slice: verify again once that run ends")
    return EXIT_DAMAGED if damage else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from prmtree.inspect import print_report, write_html

    out = _intact_run_dir(args.out)
    if args.max_trees < 0:
        _fail(f"--max-trees must be >= 0, got {args.max_trees}")
    if args.html:  # before the report: a refused target costs nothing
        html, run = Path(args.html).resolve(), out.resolve()
        if html == run or run in html.parents or html in run.parents:
            _fail(f"--html {args.html} is inside (or holds) the run directory {args.out}: write the report elsewhere")
        if html.is_dir():
            _fail(f"--html {args.html} is a directory: name the report's file (e.g. {Path(args.html) / 'report.html'})")
    print_report(out)
    if args.html:
        write_html(out, Path(args.html), max_trees=args.max_trees)
        print(f"wrote {args.html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prmtree.export import ExportOptions, NothingToExport, export

    out = _intact_run_dir(args.out)
    try:
        options = ExportOptions(
            overwrite=args.overwrite, soft=args.soft, placeholder=args.placeholder,
            system_prompt=args.system_prompt, tokenizer=args.tokenizer, test_size=args.test_size,
            license=args.license, pretty_name=args.pretty_name, keep_flagged=args.keep_flagged,
            allow_partial=args.allow_partial, allow_empty=args.allow_empty,
        )
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            n = export(out, args.format, args.to, options)
    except NothingToExport as exc:  # as `prmtree run` when it labelled nothing: no training data
        for warning in said:
            sys.stderr.write(f"prmtree: warning: {warning.message}\n")
        sys.stderr.write(f"prmtree: {exc}\n")
        return EXIT_NO_DATA
    except ValueError as exc:  # ExportError: a refused target or format, a run not finished
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(exc))
    for warning in said:  # --allow-partial: what is not in the export; --allow-empty: why it is empty
        sys.stderr.write(f"prmtree: warning: {warning.message}\n")
    print(f"wrote {n} rows to {args.to}")
    return 0


def _join_slice_values(argv: list[str]) -> list[str]:
    """``--slice -1/2`` as ``--slice=-1/2``: argparse would take the value for an option
    and say only "expected one argument"; joined, the slice check names the problem."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("--slice", "--shard"):
            value = next(it, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def cmd_grade(args: argparse.Namespace) -> int:
    """Exit 0 whatever the verdict (it is printed): a wrong answer is a result, not a
    failure; a bad --options or --answer-type is a usage error (exit 2)."""
    from prmtree.engine.answers.grade import grade

    options = None
    if args.options:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            _fail(f"--options is not JSON ({exc.msg}); give e.g. '{{\"A\": \"red\"}}' or '[\"red\", \"blue\"]'")
        if not isinstance(options, (dict, list)):
            _fail("--options must be a JSON object or list")
    try:
        verdict = grade(args.gold, args.text, answer_type=args.answer_type, options=options, extract=not args.no_extract,
                        question=args.question)
    except ValueError as exc:
        _fail(f"--answer-type: {exc}")
    if args.json:
        print(json.dumps(verdict.to_dict(), ensure_ascii=False))
    else:
        word = {True: "correct", False: "wrong", None: "cannot judge"}[verdict.correct]
        print(f"{word}\nextracted: {verdict.extracted if verdict.extracted is not None else '(none)'}\n"
              f"reason: {verdict.reason}")
    return 0


def _train_deps() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"prmtree train/score need {' and '.join(missing)}: pip install 'prmtree[train]'")


def cmd_train(args: argparse.Namespace) -> int:
    _train_deps()
    from prmtree.engine.errors import ConfigError
    from prmtree.train import TrainOptions, train
    from prmtree.train.metrics import fmt

    if args.pretrain_text != "auto" and not args.pretrain_epochs > 0:  # it would be ignored without a word
        _fail(f"--pretrain-text {args.pretrain_text} chooses what --pretrain-epochs reads, and --pretrain-epochs is "
              f"{args.pretrain_epochs:g} (no pretraining): set --pretrain-epochs, or leave --pretrain-text out")
    options = TrainOptions(
        data=args.data, out=args.out, model=args.model, labels=args.labels, lora=args.lora, lora_rank=args.lora_rank,
        epochs=args.epochs, max_steps=args.max_steps, pretrain_epochs=args.pretrain_epochs,
        pretrain_text=args.pretrain_text, lm_weight=args.lm_weight, step_logprobs=args.step_logprobs,
        paths=args.paths, freeze_lm=args.freeze_lm,
        tiny_layers=args.tiny_layers, tiny_hidden=args.tiny_hidden, lr=args.lr, batch_size=args.batch_size,
        max_length=args.max_length, test_share=args.test_share, val_share=args.val_share, select=args.select,
        seed=args.seed, marker=args.marker,
        device=args.device, bf16=args.bf16, save_every=args.save_every, resume=args.resume, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, threads=args.threads, log_every=args.log_every,
        allow_partial=args.allow_partial, keep_flagged=args.keep_flagged,
    )
    _refuse_before_first_flush(args.data)  # as export says it; train's own check would call it no run
    try:
        # --json: stdout holds the JSON alone, so the progress lines go to stderr
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            result = train(options)
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(exc))
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints saved so far are whole; --resume goes on from the last
        from prmtree.train.trainer import interrupted

        sys.stderr.write(f"prmtree: train interrupted: {interrupted(args.out)}\n")
        raise SystemExit(128 + signal.SIGINT) from None
    held = result.get("held_out") or {}
    resumed = result.get("resumed_at") or 0
    steps = result.get("steps") or 0
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout)
    if resumed and resumed == steps:  # a resume of a training stopped after its last step
        say(f"training was done at step {steps}: evaluated and saved the PRM in {result.get('seconds', 0):.1f} s")
    else:
        say(f"trained {steps - resumed} steps{f' (from step {resumed})' if resumed else ''} in "
            f"{result.get('seconds', 0):.1f} s: {result.get('tokens_per_s', 0):,.0f} tokens/s, "
            f"peak memory {result.get('peak_memory_mb', 0):,.0f} MB")
    if held:
        say(f"held-out ({_held_out_read(held, result)}): step F1 (wrong steps) "
            f"{fmt(held['step_f1_wrong'])}, step accuracy {fmt(held['step_accuracy'])}, first-error accuracy "
            f"{fmt(held['first_error_accuracy'])}, ProcessBench F1 {fmt(held['processbench_f1'])}")
    say(f"saved to {args.out} (prm_config.json, loss.png, metrics.json)")
    if args.json:
        print(json.dumps(result))
    return 0


def _held_out_read(held: dict[str, Any], result: dict[str, Any]) -> str:
    """The held-out paths and steps the metrics are over, and what the PRM's length limit left
    unread: a path with an unread step is out of the path metrics, its read steps still in."""
    total = result["held_out_paths"]
    paths = f"{held['paths']} of {total} paths" if total != held["paths"] else f"{held['paths']} paths"
    unread = held["unread_steps"]
    past = f"; {unread} steps past the PRM's {result['held_out_max_length']}-token limit unread" if unread else ""
    return f"{paths}, {held['steps']} steps{past}"


def cmd_score(args: argparse.Namespace) -> int:
    _train_deps()
    from prmtree.engine.errors import ConfigError

    if not 0.0 <= args.threshold <= 1.0:  # rewards are in [0, 1]: outside it every step is right, or wrong
        _fail(f"--threshold must be in [0, 1] (rewards are probabilities), got {args.threshold}")
    writing = False
    try:
        from prmtree.train import PRM, read_solutions, step_metrics  # torch: seconds, a Ctrl-C may land here
        from prmtree.train.metrics import fmt

        solutions = read_solutions(args.input)
        if Path(args.out).is_dir():  # said before the model loads, not after it scored
            _fail(f"--out {args.out} is a folder: name the JSONL file to write")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # as train and export make theirs
        prm = PRM.load(args.prm, device=args.device, batch_size=args.batch_size)
        rewards = prm.score_batch([(s.problem, s.steps) for s in solutions])
        writing = True
        with open(args.out, "w", encoding="utf-8") as f:
            for solution, reward in zip(solutions, rewards):
                row = {**solution.row, "step_rewards": reward}
                try:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                except UnicodeEncodeError:  # a lone surrogate in a column PRM never reads: escaped, as read
                    f.write(json.dumps(row) + "\n")
    except ConfigError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(_os_error(exc))
    except KeyboardInterrupt:  # Ctrl-C: nothing to resume, the rewards are all written at the end
        where = f"while writing {args.out} (it is incomplete)" if writing else f"before writing {args.out}"
        sys.stderr.write(f"prmtree: score interrupted {where}: run the same command again\n")
        raise SystemExit(128 + signal.SIGINT) from None
    print(f"scored {len(solutions)} solutions ({sum(len(s.steps) for s in solutions)} steps) -> {args.out}")
    unread = sum(r is None for reward in rewards for r in reward)
    if unread:
        sys.stderr.write(f"prmtree: warning: {unread} steps lie past the PRM's length limit "
                         f"({prm.encoder.max_length} tokens): never read, their step_rewards are null\n")
    labelled = [(r, s.labels) for s, r in zip(solutions, rewards) if s.labels is not None]
    if labelled:
        m = step_metrics([r for r, _ in labelled], [l for _, l in labelled], args.threshold)
        left = f"; {m['unlabelled_paths']} with no labelled step left out" if m.get("unlabelled_paths") else ""
        print(f"against the file's labels ({m['paths']} paths{left}): ProcessBench F1 {fmt(m['processbench_f1'])} "
              f"(erroneous {fmt(m['acc_erroneous'])}, correct {fmt(m['acc_correct'])}), step F1 (wrong steps) "
              f"{fmt(m['step_f1_wrong'])}, first-error accuracy {fmt(m['first_error_accuracy'])}"
              + (f", step AUROC {m['step_auroc']:.3f}" if m["step_auroc"] is not None else ""))
    return 0


def _import_from_cwd() -> None:
    """``--policy my_policy:MyVLM`` finds ``my_policy.py`` in the folder prmtree runs in, as
    ``python -m prmtree`` does (the ``prmtree`` script's path starts at its own bin folder
    instead). Last on this process's path, so a file there never shadows an installed
    package; not put on PYTHONPATH, where it would come first in every child process."""
    try:
        here = os.getcwd()
    except OSError:  # the folder it runs in was deleted: nothing to find there
        return
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command line (not a caller's argument list)
        _import_from_cwd()
    args = build_parser().parse_args(_join_slice_values(sys.argv[1:] if argv is None else argv))
    handlers = {
        "bon": cmd_bon,
        "demo": cmd_demo,
        "run": cmd_run,
        "synth": cmd_synth,
        "inspect": cmd_inspect,
        "export": cmd_export,
        "verify": cmd_verify,
        "grade": cmd_grade,
        "train": cmd_train,
        "score": cmd_score,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
