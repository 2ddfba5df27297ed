"""The serving runtimes, reproduced locally: one venv per serving image the configuration can select.

An endpoint runs its image's Python, framework, toolkit and model server, not this machine's. Each
runtime here mirrors one Deep Learning Container image (versions from its Dockerfile, pinned in
runtimes/<name>.txt) in a venv built with that image's Python, so that models are converted by the
runtime's own torch and the handler is tested under the runtime's own serving stack.

| runtime            | image (SageMaker SDK tables)            | Python | framework           | model server        |
|--------------------|-----------------------------------------|--------|---------------------|---------------------|
| eia-pytorch-1.5.1  | pytorch-inference-eia:1.5.1-cpu-py3     | 3.6    | torch 1.5.1         | multi-model-server  |
| eia-pytorch-1.3.1  | pytorch-inference-eia:1.3.1-cpu-py3     | 3.6    | torch 1.3.1         | multi-model-server  |
| eia-mxnet-1.4.1    | mxnet-inference-eia:1.4.1-cpu-py3       | 3.6    | mxnet 1.4.1         | mxnet-model-server  |
| pytorch-2.6.0      | pytorch-inference:2.6.0-{cpu,gpu}-py312 | 3.12   | torch 2.6.0         | TorchServe          |
| mxnet-1.9.0        | mxnet-inference:1.9.0-{cpu,gpu}-py38    | 3.8    | mxnet 1.9.0         | multi-model-server  |

The EIA builds of torch and MXNet (torcheia, torch_eia, amazonei_mxnet) are not public: the venvs
carry the CPU builds of the same versions, and tests stand in for the accelerator (tests/standins/).
Torch-free and imported by the build, the tests and `make setup`.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from config.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS_DIR = Path(__file__).resolve().parent
# SERVING_RUNTIMES_DIR points elsewhere, e.g. make diff's temporary worktree to this checkout's venvs.
VENVS_DIR = Path(os.environ.get("SERVING_RUNTIMES_DIR") or REPO / ".venv-runtimes")
EIA = "eia"


@dataclass(frozen=True)
class Runtime:
    name: str
    framework: str  # pytorch | mxnet
    framework_version: str
    python_version: str  # the image's Python, major.minor
    image: str  # repository:tag pattern, for people
    model_server: str  # mms | torchserve
    accelerated: bool  # an EIA image (AcceleratorType on the variant)
    pip_version: str  # the newest pip for that Python

    @property
    def requirements(self) -> Path:
        return REQUIREMENTS_DIR / f"{self.name}.txt"

    @property
    def venv(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def installed(self) -> bool:
        return (self.venv / ".installed").is_file()

    def require(self) -> Path:
        """The venv's python, or a ConfigError that says how to build the venv."""
        if not self.installed:
            raise ConfigError(
                f"the {self.name} runtime ({self.image}, Python {self.python_version}, {self.framework} "
                f"{self.framework_version}) has no venv at {self.venv}; run `make runtimes` (or `make setup-runtimes "
                f"RUNTIMES={self.name}`)"
            )
        return self.python


RUNTIMES: Dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime("eia-pytorch-1.5.1", "pytorch", "1.5.1", "3.6", "pytorch-inference-eia:1.5.1-cpu-py3", "mms", True, "21.3.1"),
        Runtime("eia-pytorch-1.3.1", "pytorch", "1.3.1", "3.6", "pytorch-inference-eia:1.3.1-cpu-py3", "mms", True, "21.3.1"),
        Runtime("eia-mxnet-1.4.1", "mxnet", "1.4.1", "3.6", "mxnet-inference-eia:1.4.1-cpu-py3", "mms", True, "21.3.1"),
        Runtime("pytorch-2.6.0", "pytorch", "2.6.0", "3.12", "pytorch-inference:2.6.0-{cpu,gpu}-py312", "torchserve", False, "25.3"),
        Runtime("mxnet-1.9.0", "mxnet", "1.9.0", "3.8", "mxnet-inference:1.9.0-{cpu,gpu}-py38", "mms", False, "25.0.1"),
    )
}


def find_runtime(framework: str, framework_version: str, profile: str) -> Optional[Runtime]:
    accelerated = profile == EIA
    for runtime in RUNTIMES.values():
        if (runtime.framework, runtime.framework_version, runtime.accelerated) == (framework, framework_version, accelerated):
            return runtime
    return None


def runtime_for(framework: str, framework_version: str, profile: str, where: str = "") -> Runtime:
    """The local runtime that mirrors the image a model serves on, or a ConfigError naming the choices."""
    runtime = find_runtime(framework, framework_version, profile)
    if runtime is None:
        kind = "Elastic Inference" if profile == EIA else "inference"
        known = ", ".join(f"{r.framework} {r.framework_version}{' (eia)' if r.accelerated else ''}" for r in RUNTIMES.values())
        raise ConfigError(
            f"{where + ': ' if where else ''}no local runtime mirrors the {framework} {framework_version} {kind} image, so "
            f"its model cannot be built or tested in its own framework here; runtimes: {known}. Add one to runtimes/ "
            "(a pinned requirements file and a row in runtimes/__init__.py)"
            + (", or build in the image itself: `python -m model_artifacts.runtime_export` there, then "
               "`make artifacts RUNTIME_EXPORT=DIR`" if framework == "pytorch" else "")
        )
    return runtime
