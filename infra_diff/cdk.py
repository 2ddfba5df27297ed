"""Building, synthesizing and diffing with this checkout's venv and CDK CLI, offline."""
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from infra_diff import UsageError


def offline_env() -> dict:
    """The caller's environment without AWS settings or PYTHONPATH (each side imports its own checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        CDK_DISABLE_VERSION_CHECK="1",
        # Without this the CLI sends telemetry to cdk-cli-telemetry.us-east-1.api.aws on every command.
        CDK_DISABLE_CLI_TELEMETRY="1",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        PYTHONDONTWRITEBYTECODE="1",
        # No credentials anywhere and no instance metadata: nothing can reach AWS, nothing waits for IMDS.
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        FORCE_COLOR="0",
    )
    return env


@contextlib.contextmanager
def progress(message: str) -> Iterator[None]:
    """'message ... 7.4s' on stderr."""
    print(f"{message} ...", end="", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Toolchain:
    """This checkout's venv python and local CDK CLI; the base worktree has neither."""

    python: Path
    cdk: Path
    mxnet_python: Path
    runtimes_dir: Path

    @classmethod
    def of(cls, repo: Path) -> "Toolchain":
        tools = cls(python=repo / ".venv" / "bin" / "python", cdk=repo / "node_modules" / ".bin" / "cdk",
                    mxnet_python=repo / ".venv-mxnet" / "bin" / "python", runtimes_dir=repo / ".venv-runtimes")
        missing = [str(p) for p in (tools.python, tools.cdk) if not p.exists()]
        if missing:
            raise UsageError(f"missing {', '.join(missing)}: run `make setup` first")
        return tools

    def build_and_synth(self, checkout: Path, config: str, artifacts: Path, outdir: Path, label: str,
                        only_models: Optional[Sequence[str]] = None, build_models: Optional[Sequence[str]] = None) -> None:
        """The checkout's own model_artifacts, app.py, config/ and stacks/ (cwd = checkout), into temp dirs.

        With `only_models` (a diff scoped to changed model files): build `build_models` only (the ones this side
        has; none, no build) and synthesize the app with just those models (`-c only_models=a,b`)."""
        self.build(checkout, config, artifacts, label, only_models, build_models)
        self.synth(checkout, config, artifacts, outdir, label, only_models)

    def build(self, checkout: Path, config: str, artifacts: Path, label: str,
              only_models: Optional[Sequence[str]] = None, build_models: Optional[Sequence[str]] = None) -> None:
        """`python -m model_artifacts build` into `artifacts`: a no-op for each model already built there from the same inputs."""
        scoped = only_models is not None
        build = [str(self.python), "-m", "model_artifacts", "build", "--config", config, "--out", str(artifacts)]
        for name in build_models or ():
            build += ["--model", name]
        if scoped and not build_models:
            artifacts.mkdir(parents=True, exist_ok=True)  # this side has none of the models: nothing to build
            return
        _run(f"building artifacts for {label}" + (f" ({', '.join(build_models)})" if scoped else ""), checkout, build,
             # The worktree has no venvs of its own: this checkout's MXNet build venv and serving runtimes.
             extra_env={"MXNET_PYTHON": str(self.mxnet_python), "SERVING_RUNTIMES_DIR": str(self.runtimes_dir)})

    def synth(self, checkout: Path, config: str, artifacts: Path, outdir: Path, label: str,
              only_models: Optional[Sequence[str]] = None) -> None:
        synth = [str(self.cdk), "synth", "**", "--quiet", "--no-notices", "-o", str(outdir), "-c", f"config_dir={config}",
                 "-c", f"artifacts_dir={artifacts}", "--app", f"{shlex.quote(str(self.python))} app.py"]
        if only_models is not None:
            synth += ["-c", f"only_models={','.join(only_models)}"]
        _run(f"synthesizing {label}" + (" (only the changed models)" if only_models is not None else ""), checkout, synth)

    def diff(self, assembly: Path, base_template: Path, stack: str) -> str:
        """`cdk diff` of one stack of a synthesized assembly against a template file: no synthesis, no AWS."""
        return _run(f"diffing {stack}", assembly.parent,
                    [str(self.cdk), "diff", "--app", str(assembly), "--template", str(base_template), "--exclusively", "--no-notices", stack])


def _run(what: str, cwd: Path, command: List[str], extra_env: Optional[dict] = None) -> str:
    with progress(what):
        result = subprocess.run(command, cwd=cwd, env={**offline_env(), **(extra_env or {})}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode in (-signal.SIGINT, -signal.SIGTERM):  # Ctrl-C reached the child first
            raise KeyboardInterrupt
        if result.returncode != 0:
            raise UsageError(f"{what} failed (exit {result.returncode}); its output:\n{result.stdout.rstrip()}\n"
                             f"error: {what} failed (cwd {cwd}), output above")
    return result.stdout
