"""What to run: a list of RunSpecs from the paper's roadmap, its kernel sweep, or a custom roadmap."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .config import ArchConfig
from .errors import RoadmapError
from .registry import config_for, get_step, kernel_sweep, step_names, steps_between


@dataclass(frozen=True)
class RunSpec:
    name: str                 # unique row label: the step, or step/variant
    step: str
    phase: str
    order: int                # position on the chart
    cfg: ArchConfig           # the full-size configuration (presets scale it)
    paper_top1: Optional[float] = None
    paper_top1_sd: Optional[float] = None
    paper_gflops: Optional[float] = None
    variant: str = ""
    roadmap: str = "paper"


def spec_for_step(name: str, order: int) -> RunSpec:
    s = get_step(name)
    return RunSpec(s.name, s.name, s.phase, order, config_for(s.name),
                   s.paper_top1, s.paper_top1_sd, s.paper_gflops)


def paper_plan(upto: Optional[str] = None, start: Optional[str] = None,
               only: Optional[Sequence[str]] = None,
               kernel_sizes: Optional[Sequence[int]] = None) -> List[RunSpec]:
    """Steps of the paper's roadmap: a range (--from/--upto) or a list (--only).

    With `kernel_sizes`, every `large_kernel` entry becomes the paper's kernel sweep.
    """
    names = step_names()
    if only:
        if upto or start:
            raise RoadmapError("use either --only or --from/--upto, not both")
        chosen = [get_step(n).name for n in only]
        chosen = sorted(set(chosen), key=names.index)
    else:
        chosen = steps_between(start, upto)
    specs = []
    for name in chosen:
        order = names.index(name)
        if kernel_sizes and name == "large_kernel":
            sweep = kernel_sweep()
            for k in kernel_sizes:
                if k % 2 == 0 or k < 1:
                    raise RoadmapError(f"--kernel-sizes: {k} is not an odd kernel size")
                top1, gflops = sweep.get(k, (None, None))
                specs.append(RunSpec(f"large_kernel/k{k}", name, get_step(name).phase, order,
                                     config_for(name, kernel_size=k), top1, None, gflops,
                                     variant=f"k{k}", roadmap="kernel sweep"))
        else:
            specs.append(spec_for_step(name, order))
    if kernel_sizes and "large_kernel" not in chosen:
        raise RoadmapError("--kernel-sizes sweeps the large_kernel step; add it, e.g. "
                           "--only large_kernel --kernel-sizes 3,5,7,9,11")
    return specs
