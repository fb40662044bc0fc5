"""`roadmap run --launcher submitit`: one cluster job per (step, seed), all into one results folder.

Every job runs the runner for its own step and seed into the shared --out folder;
results are one JSON file per run, so concurrent jobs never clash. A job that times
out or is preempted is requeued by submitit and resumes from its run's checkpoint.
`roadmap plot OUT` gathers whatever has finished. A job with several GPUs per node
runs one task per GPU, joined into one DDP process group (as under torchrun).
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import RoadmapError
from .plan import RunSpec
from .recipe import Recipe

# submitit's SLURM default is 5 minutes; 72 h is what the ConvNeXt authors' launcher asks for.
DEFAULT_TIMEOUT_MIN = 72 * 60


@dataclass
class StepJob:
    """What one job runs: the runner, for one step and one seed (pickled by submitit)."""
    spec: RunSpec
    seed: int
    recipe: Recipe
    preset: str
    data: str
    out: str
    device: str = "auto"
    threads: Optional[int] = None
    ex: object = None

    def __call__(self) -> str:
        import torch

        from .distributed import init_from_submitit, shutdown
        from .runner import run_plan

        if self.threads:
            torch.set_num_threads(self.threads)
        dist = init_from_submitit(self.device)
        try:
            run_plan([self.spec], self.recipe, self.preset, dist, ex=self.ex, data=self.data,
                     seeds=[self.seed], out=self.out, device=self.device, progress=False, plot=False)
        finally:
            shutdown(dist)
        return self.out

    def checkpoint(self, *args, **kwargs):
        # Called by submitit on timeout/preemption: requeue the same job; it resumes from
        # the checkpoint its run keeps under OUT/checkpoints.
        import submitit
        return submitit.helpers.DelayedSubmission(self)


def absolute_data(data: str) -> str:
    # Jobs may start in another directory: a relative data path must not change meaning.
    path = Path(os.path.expanduser(data))
    return str(path.resolve()) if path.exists() else data


def check_cluster(args):
    try:
        import submitit
    except ImportError:
        raise RoadmapError("--launcher submitit needs submitit: pip install -e '.[cluster]'") from None
    if args.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise RoadmapError("--launcher submitit: no SLURM here (srun not found); use "
                           "--cluster local to run the jobs on this machine")
    if args.cluster == "local" and (args.nodes or 1) > 1:
        raise RoadmapError("--cluster local runs on this machine only; drop --nodes")


def make_executor(args, folder: Path):
    import submitit

    """submitit's executor for the flags, and the processes each job will run."""
    gpus = args.gpus_per_node or 0
    tasks = args.tasks_per_node or max(gpus, 1)  # one process per GPU; on CPUs, as asked (gloo)
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=args.cluster)
    executor.update_parameters(
        timeout_min=args.timeout_min or DEFAULT_TIMEOUT_MIN, nodes=args.nodes,
        gpus_per_node=gpus or None, tasks_per_node=tasks, cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb, slurm_partition=args.partition)
    return executor, (args.nodes or 1) * tasks


def pending_runs(specs, seeds, recipe: Recipe, ds, out: Path, world_size: int):
    """The (spec, seed) pairs not finished in `out` yet: done ones get no job."""
    from .plan import data_identity, plan_runs
    from .results import ResultsDir

    results = ResultsDir(out)
    return [(r.spec, r.seed) for r in plan_runs(specs, recipe, data_identity(ds), seeds, world_size)
            if not results.is_done(r.key)]


def submit_plan(specs: Sequence[RunSpec], seeds: Sequence[int], recipe: Recipe, ex, args) -> int:
    """Submit one job per (step, seed); with --wait (always on --cluster local) gather them."""
    from . import data as D
    from .runner import default_out_dir

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RoadmapError("--launcher submitit starts its own processes; run it without torchrun")
    check_cluster(args)
    data = absolute_data(args.data)
    ds = D.load_dataset(data).subset(recipe.train_subset, recipe.val_subset)
    out = Path(args.out or default_out_dir(args.preset, ds.name)).resolve()
    executor, world_size = make_executor(args, out / "submitit")
    todo = pending_runs(specs, seeds, recipe, ds, out, world_size)
    print(f"{len(specs) * len(seeds) - len(todo)} run(s) done earlier in {out}; "
          f"submitting {len(todo)}", flush=True)
    jobs = []
    for spec, seed in todo:
        executor.update_parameters(name=f"roadmap-{spec.name.replace('/', '-')}-s{seed}")
        job = executor.submit(StepJob(spec, seed, recipe, args.preset, data, str(out),
                                      args.device, args.threads, ex))
        jobs.append((spec.name, seed, job))
        print(f"submitted {spec.name} seed {seed}: job {job.job_id}", flush=True)
    if jobs:
        print(f"{len(jobs)} job(s) -> {out} (logs: {out / 'submitit'})", flush=True)
    if not (args.wait or args.cluster == "local"):
        print(f"when they finish: roadmap plot {out}")
        return 0
    failed = wait_for(jobs)
    gather(out, plot=not args.no_plot)
    if failed:
        raise RoadmapError(f"{len(failed)} of {len(jobs)} job(s) failed: " + "; ".join(failed))
    return 0


def wait_for(jobs) -> List[str]:
    """Wait for every job; return a line for each that failed."""
    failed = []
    for name, seed, job in jobs:
        try:
            job.results()  # one per task; raises what a task raised
            print(f"job {job.job_id} ({name} seed {seed}) finished", flush=True)
        except Exception as e:  # a failed job must not hide the others' results
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            failed.append(f"{name} seed {seed} (job {job.job_id}: {last}; log {job.paths.stderr})")
    return failed


def gather(out: Path, plot: bool = True):
    """Rebuild the tables (and figure) from every job's runs/*.json."""
    from .outputs import write_outputs

    written = write_outputs(out, figures=plot)
    print(f"results: {out / 'results.csv'} ({len(written['table'])} run(s))")
    if written["figures"]:
        print(f"figure: {written['figures'][0]}")
