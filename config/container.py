"""The serving container's environment, shared by the SageMaker Model and `make serve`."""
from typing import Dict

from config.schema import ModelSpec

HANDLER_PROGRAM = "inference.py"
# model.tar.gz is extracted to /opt/ml/model; the handler ships in its code/ folder.
SUBMIT_DIRECTORY = "/opt/ml/model/code"
MAX_REQUEST_BYTES_ENV = "INFERENCE_MAX_REQUEST_BYTES"  # read by inference_src/inference.py


def container_environment(spec: ModelSpec) -> Dict[str, str]:
    return {
        "SAGEMAKER_PROGRAM": HANDLER_PROGRAM,
        "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIRECTORY,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
        MAX_REQUEST_BYTES_ENV: str(spec.serving.max_request_bytes),
        # The model servers drop the connection above their own limits; keep those well above the handler's,
        # so an oversized body gets the handler's 413 and its message. TorchServe (2.x images) and
        # multi-model-server (EIA images; it reads MMS_* because the toolkit enables env-var config).
        "TS_MAX_REQUEST_SIZE": str(2 * spec.serving.max_request_bytes),
        "MMS_MAX_REQUEST_SIZE": str(2 * spec.serving.max_request_bytes),
    }
