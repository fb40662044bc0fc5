"""`roadmap run --launcher submitit`: one cluster job per (step, seed), all into one results folder.

Each job is `roadmap run` with the user's own flags, run in the job's process and restricted
to its step and seed (`--only STEP --seeds 1 --seed-offset S`; a custom roadmap's row by
`--from ROW --upto ROW`; a kernel-sweep variant by `--only large_kernel --kernel-sizes K`):
whatever `run` does here, a job does there, and no flag can be lost on the way. Results are
one JSON file per run, so concurrent jobs never clash. A job that times out or is preempted
is requeued by submitit and resumes from its run's checkpoint. A job with several tasks
joins them into one DDP process group (as under torchrun).

Runs recorded as failed get a job again only with --retry-failed; otherwise they are named
and the command exits 1, as `roadmap run` does.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from .errors import RoadmapError

# submitit's SLURM default is 5 minutes; 72 h is what the ConvNeXt authors' launcher asks for.
DEFAULT_TIMEOUT_MIN = 72 * 60
# run's flags that a job does not take as given: the launcher's own, the ones that choose the
# step and seed (each job gets its own) and the paths (made absolute: a job may start elsewhere).
NOT_PASSED_ON = {
    "command",
    "func",
    "launcher",
    "cluster",
    "partition",
    "nodes",
    "gpus_per_node",
    "tasks_per_node",
    "cpus_per_task",
    "mem_gb",
    "timeout_min",
    "wait",
    "upto",
    "from",
    "only",
    "kernel_sizes",
    "seeds",
    "seed_offset",
    "no_plot",
    "no_progress",
    "out",
    "data",
    "roadmap",
}


@dataclass
class RunJob:
    """One job: the command `roadmap ARGV`, started by the job's process (pickled by submitit).

    A command of its own, not a call into the CLI: the job is exactly what a user would type,
    its messages go to the job's log, and the launcher sits below the CLI that calls it."""

    argv: List[str]

    def __call__(self) -> int:
        import subprocess
        import sys

        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            # RANK, WORLD_SIZE, ...: `roadmap run` then joins the tasks as it joins torchrun's
            # processes. Every task sees every GPU of its node and takes cuda:local_rank.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        code = subprocess.run([sys.executable, "-m", "roadmap", *self.argv]).returncode
        if code:  # the job fails; the run's own line is in the job's log, its record says why
            raise RuntimeError(f"roadmap {' '.join(self.argv[:1])} exited with {code}")
        return code

    def checkpoint(self, *args, **kwargs):
        # Called by submitit on timeout/preemption: requeue the same job; it resumes from
        # the checkpoint its run keeps under OUT/checkpoints.
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def absolute_path(value: str) -> str:
    # Jobs may start in another directory: a relative path must not change meaning.
    path = Path(os.path.expanduser(value))
    return str(path.resolve()) if path.exists() else value


def passed_on(args, defaults: dict) -> List[str]:
    """The user's `run` flags that every job takes as they are: all but NOT_PASSED_ON, those
    that differ from `defaults` (the parser's), as given."""
    flags = []
    for dest, value in vars(args).items():
        if dest in NOT_PASSED_ON or value is None or value is False or value == defaults.get(dest):
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:  # --flag=VALUE: a value may start with "-"
            flags += [f"{flag}={v}" for v in (value if isinstance(value, list) else [value])]
    return flags


def job_argv(args, defaults: dict, spec, seed: int, data: str, out: Path) -> List[str]:
    """`roadmap run` of one (spec, seed): the user's flags, then this job's step and seed."""
    if args.roadmap:
        which = ["--roadmap", absolute_path(args.roadmap), "--from", spec.name, "--upto", spec.name]
    elif spec.variant:  # the kernel sweep: large_kernel/k<K>
        which = ["--only", spec.step, "--kernel-sizes", str(spec.cfg.kernel_size)]
    else:
        which = ["--only", spec.step]
    return [
        "run",
        *passed_on(args, defaults),
        *which,
        "--seeds",
        "1",
        f"--seed-offset={seed}",
        "--data",
        data,
        "--out",
        str(out),
        "--launcher",
        "local",
        "--no-plot",
        "--no-progress",
    ]


def check_cluster(args):
    try:
        import submitit
    except ImportError:
        raise RoadmapError("--launcher submitit needs submitit: pip install -e '.[cluster]'") from None
    from .env import env_int

    if env_int("WORLD_SIZE", 1, minimum=1) > 1:
        raise RoadmapError("--launcher submitit starts its own processes; run it without torchrun")
    if args.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise RoadmapError(
            "--launcher submitit: no SLURM here (srun not found); use --cluster local to run the jobs on this machine"
        )
    if args.cluster == "local" and (args.nodes or 1) > 1:
        raise RoadmapError("--cluster local runs on this machine only; drop --nodes")


def make_executor(args, ex, folder: Path):
    """submitit's executor for the flags, and the processes each job will run."""
    import submitit

    gpus = args.gpus_per_node or 0
    tasks = args.tasks_per_node or max(gpus, 1)  # one process per GPU; on CPUs, as asked (gloo)
    cpus = args.cpus_per_task
    if cpus is None and args.cluster == "slurm":
        from .env import cpus_per_task

        # SLURM's default of 1 CPU would starve the loader: one per worker, plus the loop
        cpus = cpus_per_task(ex.workers)
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=args.cluster)
    executor.update_parameters(
        timeout_min=args.timeout_min or DEFAULT_TIMEOUT_MIN,
        nodes=args.nodes,
        gpus_per_node=gpus or None,
        tasks_per_node=tasks,
        cpus_per_task=cpus,
        mem_gb=args.mem_gb,
        slurm_partition=args.partition,
    )
    return executor, (args.nodes or 1) * tasks


def sort_runs(specs, seeds, recipe, ds, out: Path, world_size: int, retry_failed: bool):
    """(done, failed earlier, to submit) of the (spec, seed) pairs: a job only for a run with
    no record yet, or recorded as failed under --retry-failed. Keys from `plan_runs`, as the
    jobs' own runner makes them."""
    from .plan import data_identity, plan_runs
    from .results import ResultsDir

    results = ResultsDir(out)
    done, failed, todo = 0, [], []
    for run in plan_runs(specs, recipe, data_identity(ds), seeds, world_size):
        status = results.status(run.key)
        if status == "ok":
            done += 1
        elif status == "failed" and not retry_failed:
            error = results.load(run.key).get("error") or "no message"
            print(f"{run.spec.name} seed {run.seed}: failed earlier: {error}; --retry-failed to try again", flush=True)
            failed.append(f"{run.spec.name} seed {run.seed} (earlier): {error}")
        else:
            todo.append((run.spec, run.seed, run.key))
    return done, failed, todo


def submit_plan(specs: Sequence, seeds: Sequence[int], recipe, ex, args, defaults: dict, roadmap_name=None) -> int:
    """Submit one job per (step, seed) left to run; with --wait (always on --cluster local) wait
    for them and write the tables and figure. Failed runs end it with RunsFailed (exit 1)."""
    from . import data as D
    from .plan import default_out_dir
    from .runner import RunsFailed

    check_cluster(args)
    data = absolute_path(args.data)
    ds = D.load_dataset(data).subset(recipe.train_subset, recipe.val_subset)
    D.check_recipe_fits(ds, recipe)
    out = Path(args.out or default_out_dir(args.preset, ds.name, roadmap_name)).resolve()
    executor, world_size = make_executor(args, ex, out / "submitit")
    done, failed, todo = sort_runs(specs, seeds, recipe, ds, out, world_size, args.retry_failed)
    print(f"{done} run(s) done earlier in {out}; submitting {len(todo)}", flush=True)
    jobs = []
    for spec, seed, key in todo:
        executor.update_parameters(name=f"roadmap-{spec.name.replace('/', '-')}-s{seed}")
        job = executor.submit(RunJob(job_argv(args, defaults, spec, seed, data, out)))
        jobs.append((f"{spec.name} seed {seed}", key, job))
        print(f"submitted {spec.name} seed {seed}: job {job.job_id}", flush=True)
    if jobs:
        print(f"{len(jobs)} job(s) -> {out} (logs: {out / 'submitit'})", flush=True)
    if args.wait or args.cluster == "local":
        failed += wait_for(jobs, out)
        write_results(out, plot=not args.no_plot)
    elif jobs:
        print(f"when they finish: roadmap plot {out}")
    if failed:
        raise RunsFailed(
            f"{len(failed)} of {len(specs) * len(seeds)} run(s) failed: {failed[0]}"
            + (f" (and {len(failed) - 1} more above)" if len(failed) > 1 else "")
            + "; fix the cause, then rerun with --retry-failed"
        )
    return 0


def wait_for(jobs, out: Path) -> List[str]:
    """Wait for every job; return a line for each whose run failed or did not finish."""
    from .results import ResultsDir

    results, failed = ResultsDir(out), []
    for name, key, job in jobs:
        try:
            job.results()  # one per task; raises what a task raised
            print(f"job {job.job_id} ({name}) finished", flush=True)
        except Exception as e:  # a failed job must not hide the others' results
            if results.status(key) == "failed":  # the run failed, and says why in its record
                error = results.load(key).get("error") or "no message"
            else:  # the job itself failed: its last line says why
                error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            failed.append(f"{name}: {error} (job {job.job_id}, log {job.paths.stderr})")
            print(f"job {job.job_id} ({name}) FAILED: {error}", flush=True)
    return failed


def write_results(out: Path, plot: bool = True):
    """The tables (and figure) of every job's runs/*.json, rebuilt once all are in."""
    from .outputs import write_outputs

    write_outputs(out, figures=plot)
