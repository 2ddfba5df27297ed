"""Stand-in for the torch_eia 1.3.1 build's two-argument torch.jit.optimized_execution (tests only).

CPU torch 1.3.1 has `optimized_execution(should_optimize)`; the EI build adds an options dict,
`{"target_device": "eia:0"}`, that sends the graph to the accelerator. install() gives CPU torch that
signature (the graph still runs on the CPU) and records every call in `calls`.
"""
import contextlib

import torch

calls = []  # one {"should_optimize": ..., "options": ...} per call
_cpu_optimized_execution = torch.jit.optimized_execution


@contextlib.contextmanager
def optimized_execution(should_optimize, options=None):
    calls.append({"should_optimize": should_optimize, "options": options})
    with _cpu_optimized_execution(should_optimize):
        yield


def install():
    if not torch.__version__.startswith("1.3."):
        raise RuntimeError("the two-argument optimized_execution exists only in torch_eia 1.3.1, not torch " + torch.__version__)
    torch.jit.optimized_execution = optimized_execution
