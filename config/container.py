"""The serving container's environment, shared by the SageMaker Model and `make serve`."""
from typing import Dict

from config.schema import ModelDeployment
from config.workers import worker_plan
from inference_src.request_handling import LIMITS

HANDLER_PROGRAM = "inference.py"
# model.tar.gz is extracted to /opt/ml/model; the handler ships in its code/ folder.
SUBMIT_DIRECTORY = "/opt/ml/model/code"
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
# What the frameworks read for their intra-op thread pools, checked in each runtime's venv: torch 1.3.1, 1.5.1 and
# 2.6.0 take MKL_NUM_THREADS over OMP_NUM_THREADS (OMP=1 MKL=2 gives torch.get_num_threads() == 2), so both are
# set; MXNet 1.4.1 and 1.9.0 size their OpenMP operator pools from OMP_NUM_THREADS. Neither model server sets
# them for a worker: multi-model-server's worker sets OMP_NUM_THREADS=1 only when it is unset, the MXNet toolkit
# likewise (with its MXNET_*_NTHREADS engine defaults, left as they are), TorchServe only for torchrun workers.
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
JAVA_INT_MAX = 2**31 - 1


def worker_environment(workers: int, threads_per_worker: int) -> Dict[str, str]:
    """The model server's worker count and each worker's intra-op threads, as the container reads them."""
    return {WORKERS_ENV: str(workers), **{name: str(threads_per_worker) for name in THREAD_ENVS}}


def model_server_request_size(max_request_bytes: int) -> int:
    """Twice the handler's limit, so the handler answers an oversized body; at most Java's int (2^31 - 1)."""
    return min(2 * max_request_bytes, JAVA_INT_MAX)


def container_environment(deployment: ModelDeployment) -> Dict[str, str]:
    spec = deployment.spec
    return {
        "SAGEMAKER_PROGRAM": HANDLER_PROGRAM,
        "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIRECTORY,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
        # serving.workers and serving.threads_per_worker, or what config/workers.py derives from the vCPUs
        **worker_environment(*worker_plan(deployment).as_tuple()),
        # serving.limits, read by inference_src/request_handling.py
        **{limit.env: str(getattr(spec.serving.limits, limit.key)) for limit in LIMITS},
        # The model servers drop the connection above their own limits; keep those well above the handler's,
        # so an oversized body gets the handler's 413 and its message. TorchServe (2.x images) and
        # multi-model-server (EIA images; it reads MMS_* because the toolkit enables env-var config).
        # Async bodies may reach 1 GB (serving.profile: async): the servers read these as a Java int.
        "TS_MAX_REQUEST_SIZE": str(model_server_request_size(spec.serving.limits.max_request_bytes)),
        "MMS_MAX_REQUEST_SIZE": str(model_server_request_size(spec.serving.limits.max_request_bytes)),
    }
