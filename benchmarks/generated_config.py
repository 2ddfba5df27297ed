"""A configuration with N generated models, for the scale benchmark and the 100-model tests (never committed).

Each model is the tiny example classifier (example-resnet-tiny) on the EIA profile, like the shipped
image-classifier otherwise. `distinct=True` gives each model its own input size, so that no two share a
build (a real build per model); without it they differ only in name, and the build cache builds one.
The environments, app.yaml and pipeline.yaml are copies of the repository's.
"""
import shutil
from pathlib import Path

from benchmarks.common import REPO

SHIPPED_CONFIG = REPO / "config"
MODEL_TEMPLATE = """\
framework: pytorch
build:
  model: example-resnet-tiny
  input_shape: [1, 3, {size}, {size}]
  input_dtype: float32
serving:
  profile: eia
  profiles:
    eia:
      instance_type: ml.m5.large
      accelerator_type: ml.eia2.medium
      framework_version: "1.5.1"
scaling:
  initial_instance_count: 1
  min_instances: 1
  max_instances: 2
"""
BASE_SIZE = 32


def model_name(index: int) -> str:
    return f"model-{index:03d}"


def generate_config(directory: Path, models: int, *, pipeline: bool = True, distinct: bool = False) -> Path:
    """`directory` (created) holds environments/, app.yaml, [pipeline.yaml] and models/model-001.yaml ..."""
    directory = Path(directory)
    shutil.copytree(SHIPPED_CONFIG / "environments", directory / "environments")
    for name in ("app.yaml", *(("pipeline.yaml",) if pipeline else ())):
        shutil.copy(SHIPPED_CONFIG / name, directory / name)
    (directory / "models").mkdir()
    for index in range(1, models + 1):
        size = BASE_SIZE + (index - 1 if distinct else 0)
        (directory / "models" / f"{model_name(index)}.yaml").write_text(MODEL_TEMPLATE.format(size=size))
    return directory
