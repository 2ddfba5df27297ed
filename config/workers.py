"""Model-server workers per instance and intra-op threads per worker, from the instance's vCPUs.

Left alone, both SageMaker model servers (TorchServe, multi-model-server) start one worker per vCPU,
and each worker's torch starts an intra-op pool of one thread per vCPU: vCPUs² threads on vCPUs cores.
`worker_plan` decides both numbers so that workers x threads = vCPUs, honouring `serving.workers` and
`serving.threads_per_worker` when set, and refusing a combination that oversubscribes the host.
The vCPUs come from config/data/instance_types.json (dated, sourced); the split is the one
benchmarks/concurrency.py measured best (benchmarks/README.md, "Workers and threads").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

from config.errors import ConfigError
from config.schema import ModelDeployment

DATA_FILE = Path(__file__).parent / "data" / "instance_types.json"
DATA_FILE_NAME = "config/data/instance_types.json"
WORKERS_KEY = "serving.workers"
THREADS_KEY = "serving.threads_per_worker"

# CPU hosts (cpu, eia and serverless profiles): intra-op threads per worker when neither key is set; the workers
# then fill the vCPUs. benchmarks/concurrency.py (ResNet-50, npy batch 1, TorchServe in the pytorch-2.6.0 runtime,
# 2 vCPUs; benchmarks/README.md, "Workers and threads") measured one single-threaded worker per vCPU (2x1) against
# one worker with every thread (1x2) and the servers' own default (2x2): under concurrent load 2x1 serves 1.3-1.5x
# the requests of 1x2 at 0.5-0.7x its p99 (concurrency 4 and 16, two runs), and 2.6-3.6x those of 2x2 at a fifth of
# its p99. 1x2 wins only alone (concurrency 1: p50 86 ms against 131 ms): a latency-bound endpoint that never sees
# concurrent requests can set serving.workers: 1 (the threads then fill the vCPUs).
CPU_THREADS_PER_WORKER = 1


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    threads_per_worker: int
    vcpus: Optional[int]  # None: an instance type missing from the data file, both keys set explicitly
    basis: str  # where the vCPUs came from, for messages and docs

    def as_tuple(self) -> Tuple[int, int]:
        return self.workers, self.threads_per_worker


@lru_cache(maxsize=None)
def instance_data() -> dict:
    return json.loads(DATA_FILE.read_text())


def instance_types() -> Dict[str, dict]:
    return instance_data()["instance_types"]


def serverless_vcpus(memory_size_mb: int) -> int:
    """The assumed vCPUs of a serverless endpoint (AWS publishes none; see the data file's serverless.assumption)."""
    table = instance_data()["serverless"]["vcpus_by_memory_size_mb"]
    if str(memory_size_mb) in table:
        return table[str(memory_size_mb)]
    return max(1, memory_size_mb // instance_data()["serverless"]["mb_per_vcpu"])


def _host(deployment: ModelDeployment) -> Tuple[Optional[int], int, str]:
    """(vCPUs or None if unknown, GPUs, a description) of the host the model server runs on."""
    target = deployment.target
    if target.is_serverless:
        memory = target.memory_size_mb
        return serverless_vcpus(memory), 0, f"serverless {memory} MB (assumed {serverless_vcpus(memory)} vCPUs, {DATA_FILE_NAME})"
    known = instance_types().get(target.instance_type or "")
    if known is None:
        return None, 0, f"{target.instance_type} (not in {DATA_FILE_NAME})"
    # EIA: the model server runs on the CPU host; the accelerator does the forward pass, the host's vCPUs the rest.
    return known["vcpus"], known["gpus"], f"{target.instance_type}: {known['vcpus']} vCPUs" + (
        f", {known['gpus']} GPU{'s' if known['gpus'] > 1 else ''}" if known["gpus"] else "")


def worker_plan(deployment: ModelDeployment) -> WorkerPlan:
    """Workers and threads per worker for this deployment, or a ConfigError naming the keys."""
    serving = deployment.spec.serving
    where = deployment.target.source
    workers, threads = serving.workers, serving.threads_per_worker
    vcpus, gpus, basis = _host(deployment)
    if vcpus is None:
        if workers is not None and threads is not None:
            return WorkerPlan(workers, threads, None, basis)  # the user's numbers; nothing to check them against
        key = f"serving.profiles.{deployment.target.profile}.instance_type"
        raise ConfigError(
            f"{where}: {key} = {deployment.target.instance_type!r} has no vCPU count in {DATA_FILE_NAME}, so "
            f"{WORKERS_KEY} and {THREADS_KEY} cannot be derived; add the type to that file (vcpus, memory_gib, gpus, "
            f"from its source), or set both {WORKERS_KEY} and {THREADS_KEY} yourself"
        )
    if workers is None and threads is None:
        if gpus:
            # GPU hosts: one worker per GPU, as both servers do by default (each worker is handed its own gpu_id).
            # The forward pass runs on the GPU, so more workers per GPU would mostly add model copies to its memory
            # and contend for the one device; the vCPUs are shared among the workers for their CPU side (decoding,
            # the handler, host-side ops). Not measured here (no GPU): set serving.workers to try more.
            workers = gpus
        else:
            threads = min(CPU_THREADS_PER_WORKER, vcpus)
    if workers is None:
        workers = max(1, vcpus // threads)
    if threads is None:
        threads = max(1, vcpus // workers)
    if workers * threads > vcpus:
        given = " and ".join(f"{key} = {value}" for key, value in ((WORKERS_KEY, serving.workers), (THREADS_KEY, serving.threads_per_worker))
                             if value is not None)
        raise ConfigError(
            f"{where}: {given} gives {workers} workers x {threads} threads = {workers * threads} intra-op threads, more "
            f"than the {vcpus} vCPUs of {basis.split(':')[0]} ({DATA_FILE_NAME}); oversubscribed threads raised p99 and "
            f"lowered throughput when measured (benchmarks/README.md, \"Workers and threads\"). Set {WORKERS_KEY} x "
            f"{THREADS_KEY} <= {vcpus}, or leave both unset for {_auto_text(vcpus, gpus)}"
        )
    return WorkerPlan(workers, threads, vcpus, basis)


def _auto_text(vcpus: int, gpus: int) -> str:
    if gpus:
        return f"{gpus} worker(s) x {max(1, vcpus // gpus)} threads"
    threads = min(CPU_THREADS_PER_WORKER, vcpus)
    return f"{max(1, vcpus // threads)} worker(s) x {threads} thread(s)"


def workers_and_threads(deployment: ModelDeployment) -> Tuple[int, int]:
    """(workers, threads_per_worker) of the deployment's endpoint."""
    return worker_plan(deployment).as_tuple()
