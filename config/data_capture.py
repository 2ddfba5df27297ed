"""Data capture (`data_capture:` in config/environments/<env>.yaml) against each model's profile.

Sources of the constraints below:
- botocore's model of the SageMaker API (data/sagemaker/2017-07-24/service-2.json): DataCaptureConfig,
  CaptureContentTypeHeader (JsonContentTypes / CsvContentTypes: 1-10 items, each 1-256 characters matching
  CONTENT_TYPE_PATTERN), CaptureOptions (1-32, CaptureMode Input | Output | InputAndOutput), SamplingPercentage 0-100.
- SageMaker Developer Guide, "Deploy models with Amazon SageMaker Serverless Inference", Feature exclusions:
  serverless endpoints support neither data capture nor Model Monitor. The environment's switch then leaves the
  serverless models out with a synth warning (stacks/constructs/data_capture.py), so that serverless stays a
  one-line switch of the model file.
Allowed, as no documentation excludes them: async endpoints (the captured input is the S3 payload's body),
EIA endpoints (capture happens in SageMaker's front end, not in the container) and inference components
(scale to zero; not verified against a real account: README says so).
"""
import re

from config.errors import ConfigError
from config.schema import DataCaptureSpec, ModelDeployment

# botocore: JsonContentType / CsvContentType (type/subtype, letters, digits, single hyphens; dots in the subtype).
CONTENT_TYPE_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*/[a-zA-Z0-9](-*[a-zA-Z0-9.])*")
CONTENT_TYPE_MAX_LENGTH = 256
CAPTURE_MODES = {"input": "Input", "output": "Output"}


def check(deployment: ModelDeployment, model_where: str, env_where: str) -> None:
    spec = deployment.data_capture
    if spec is None:
        return
    _check_content_types(spec, env_where)


def _check_content_types(spec: DataCaptureSpec, env_where: str) -> None:
    for key in ("json_content_types", "csv_content_types"):
        for value in getattr(spec, key):
            if len(value) > CONTENT_TYPE_MAX_LENGTH or not CONTENT_TYPE_PATTERN.fullmatch(value):
                raise ConfigError(
                    f"{env_where}: data_capture.{key} has {value!r}, which SageMaker refuses: a content type is "
                    f"type/subtype of letters, digits and hyphens (dots in the subtype), at most {CONTENT_TYPE_MAX_LENGTH} "
                    "characters, with no parameters (no '; charset=...'); e.g. application/json, text/csv"
                )


def capture_modes(spec: DataCaptureSpec) -> list:
    """CaptureOptions' modes in a stable order, each once: ['Input', 'Output'] for input + output."""
    return [mode for key, mode in CAPTURE_MODES.items() if key in spec.capture]
