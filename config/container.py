"""The serving container's environment, shared by the SageMaker Model and `make serve`."""
from typing import Dict

from config.schema import ModelSpec
from inference_src.request_handling import LIMITS

HANDLER_PROGRAM = "inference.py"
# model.tar.gz is extracted to /opt/ml/model; the handler ships in its code/ folder.
SUBMIT_DIRECTORY = "/opt/ml/model/code"


def container_environment(spec: ModelSpec) -> Dict[str, str]:
    return {
        "SAGEMAKER_PROGRAM": HANDLER_PROGRAM,
        "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIRECTORY,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
        # serving.limits, read by inference_src/request_handling.py
        **{limit.env: str(getattr(spec.serving.limits, limit.key)) for limit in LIMITS},
        # The model servers drop the connection above their own limits; keep those well above the handler's,
        # so an oversized body gets the handler's 413 and its message. TorchServe (2.x images) and
        # multi-model-server (EIA images; it reads MMS_* because the toolkit enables env-var config).
        "TS_MAX_REQUEST_SIZE": str(2 * spec.serving.limits.max_request_bytes),
        "MMS_MAX_REQUEST_SIZE": str(2 * spec.serving.limits.max_request_bytes),
    }
