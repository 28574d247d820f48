"""Many words: a file of training jobs, each the options of one `train` command, run one after another here or one
per task of a cluster scheduler (a Slurm array of torchrun jobs: see the README, "Many words on a cluster").

The file is JSON Lines: one object per line, its keys the `train` command's options without the dashes, e.g.
    {"model": "v1-5.safetensors", "images": "cats/", "name": "my-cat", "out": "words/my-cat.safetensors", "lr": "5e-3"}
("true"/"false" for the on/off options: "flip": false is --no-flip). Relative paths are read from the folder the
command runs in. Blank lines are skipped; `--index I` runs the I-th job (from 0, blank lines not counted).

A finished job leaves NAME.report.json beside its embedding (its outcome, written atomically after the last save):
a rerun skips it. A job stopped before that (preempted, killed) resumes from its last resume state, so a rerun
loses at most save_every steps; one never started starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SettingError, TIError


class _JobParser(argparse.ArgumentParser):
    """A job's options are checked by the `train` command's parser; a mistake names the job's line."""

    def error(self, message):
        raise SettingError(f"{self.prog}: {message}.")


def read_jobs(path) -> list:
    """The jobs of a JSON Lines file: (line number, options dict) pairs."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SettingError(f"cannot read the jobs file {path} ({e.strerror or e}).") from None
    jobs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except json.JSONDecodeError as e:
            raise SettingError(f"{path}:{number}: not a JSON object ({e.msg}); "
                               "write one object of `train` options per line.") from None
        if not isinstance(job, dict):
            raise SettingError(f"{path}:{number}: a {type(job).__name__}, not an object of `train` options.")
        jobs.append((number, job))
    if not jobs:
        raise SettingError(f"{path}: no jobs in it; write one object of `train` options per line.")
    return jobs


def job_argv(job: dict) -> list:
    """The `train` command line of a job's options: {"lr": "5e-3", "flip": false} -> --lr 5e-3 --no-flip."""
    argv = []
    for key, value in job.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def job_options(config, **extra) -> dict:
    """A job line's options for a TrainConfig: the options that differ from their defaults, keyed by their flags
    without dashes (the output is always written), then `extra` (model, images, dtype, device)."""
    from .train_config import cli_flag, options

    job = {}
    for name, option, default, _ in options():
        flag, value = cli_flag(name, option), getattr(config, name)
        if flag is not None and (value != default or option.cli_required):
            job[flag[2:]] = value
    return {**extra, **job}


def parse_job(job: dict, where: str) -> argparse.Namespace:
    from .train_cli import add_train_arguments

    parser = _JobParser(prog=where, add_help=False)
    add_train_arguments(parser)
    return parser.parse_args(job_argv(job))


def report_path_for(output) -> Path:
    output = Path(output)
    return output.with_name(output.name.rsplit(".", 1)[0] + ".report.json")


def run_job(args: argparse.Namespace, device: str) -> dict:
    """Run one parsed job unless it is done; resume it from its state when one is there. Returns what happened."""
    from .atomic import atomic_write
    from .distributed import current
    from .train import state_path_for
    from .train_cli import train_from_args

    report = report_path_for(args.output)
    if report.exists():
        return {"name": args.name, "status": "skipped", "report": str(report)}
    state = Path(args.state_path) if args.state_path else state_path_for(args.output)
    if args.resume is None and state.exists():
        args.resume = str(state)
    result = train_from_args(args, args.device if current().size == 1 and args.device else device)
    record = {"name": args.name, "status": "resumed" if args.resume else "trained", **result.report()}
    if result.outcome == "cancelled":  # not done: a rerun resumes it
        return record
    if current().is_main:
        text = (json.dumps(result.report(), indent=2) + "\n").encode()
        atomic_write(report, lambda f: f.write(text), overwrite=True)
        record["report"] = str(report)
    return record


def cmd_jobs(args) -> int:
    from .distributed import current, main_speaks, process_group
    from .models import best_device

    jobs = read_jobs(args.file)
    if args.index is not None and not 0 <= args.index < len(jobs):
        raise SettingError(f"--index {args.index}: {args.file} holds jobs 0 to {len(jobs) - 1}.")
    chosen = [jobs[args.index]] if args.index is not None else jobs
    parsed = [parse_job(job, f"{args.file}:{number}") for number, job in chosen]  # every mistake before any work
    failed = 0
    with process_group(args.device or best_device()) as device, main_speaks(current()):
        world = current()
        for job in parsed:
            try:
                record = run_job(job, device)
            except TIError as e:
                if world.size > 1:  # the other processes cannot go on to the next job without this one
                    raise
                failed += 1
                print(json.dumps({"name": job.name, "status": "failed", "error": str(e)}), flush=True)
                continue
            if world.is_main:
                print(json.dumps(record), flush=True)  # one line per job, for a scheduler's log
            if record.get("outcome") == "cancelled":
                break
    if failed:
        print(f"error: {failed} of {len(parsed)} job(s) failed (see above); a rerun skips the finished ones",
              file=sys.stderr)
        return 2
    return 0


def add_jobs_parser(sub) -> None:
    p = sub.add_parser("jobs", help="run a JSON Lines file of training jobs (one `train` command's options per "
                                    "line); finished ones are skipped, stopped ones resumed")
    p.add_argument("file", help="the jobs: one JSON object per line, keys the train options without dashes")
    p.add_argument("--index", type=int, help="run only job I (from 0), e.g. --index $SLURM_ARRAY_TASK_ID")
    p.add_argument("--device", help="cuda, mps, cpu (default: the best available); under torchrun, one GPU per "
                                    "process")
    p.set_defaults(run=cmd_jobs)
