"""Build the serving runtimes' venvs: `python -m runtimes setup [--config DIR | --all | NAME ...]`.

  setup --config config   the runtimes the configuration's models serve on (what `make setup` builds)
  setup --all             every runtime (what `make test` needs: it tests every profile the config can select)
  setup NAME ...          those runtimes
  list                    each runtime, its image and whether its venv is built

A venv is rebuilt only when its requirements file or interpreter changed (a stamp holds both).
The interpreter for Python X.Y comes from $PYTHONXY (e.g. PYTHON36=/usr/bin/python3.6), else pyenv's
newest X.Y, else pythonX.Y on PATH.
"""
import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional

from config.errors import ConfigError
from runtimes import RUNTIMES, Runtime, runtime_for

STAMP = ".installed"


class InterpreterMissing(ConfigError):
    pass


def interpreter_variable(python_version: str) -> str:
    return "PYTHON" + python_version.replace(".", "")


def find_interpreter(runtime: Runtime) -> Path:
    """The runtime image's Python on this machine, or an error naming the ways to get it."""
    version, variable = runtime.python_version, interpreter_variable(runtime.python_version)
    candidates: List[str] = []
    if os.environ.get(variable):
        candidates.append(os.environ[variable])
    else:
        pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
        found = sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), key=_version_key)
        candidates += found[::-1]
        on_path = shutil.which(f"python{version}")
        if on_path:
            candidates.append(on_path)
    for candidate in candidates:
        if _reports_version(candidate, version):
            return Path(candidate)
    told = f" ({variable}={os.environ[variable]} is not a working Python {version})" if os.environ.get(variable) else ""
    raise InterpreterMissing(
        f"the {runtime.name} runtime needs Python {version}, the Python of its image {runtime.image}, and none was "
        f"found{told}. Install it (`pyenv install {version}`, or your distribution's python{version}) or point "
        f"{variable} at one: `make setup {variable}=/path/to/python{version}`. Or skip the local runtime and build "
        f"in the image itself with Docker, as the pipeline does: `docker run --rm -v $PWD:/src -w /src "
        f"<account>.dkr.ecr.<region>.amazonaws.com/{runtime.image} python -m model_artifacts.runtime_export ...`, "
        "then `make artifacts RUNTIME_EXPORT=DIR`"
    )


def _version_key(path: str):
    parts = Path(path).parts[-3].split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def _reports_version(python: str, version: str) -> bool:
    try:
        result = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def stamp_for(runtime: Runtime, interpreter: Path) -> str:
    digest = hashlib.sha256(runtime.requirements.read_bytes())
    digest.update(f"\0{interpreter}\0{runtime.pip_version}".encode())
    return digest.hexdigest()


def setup(runtime: Runtime, say=print) -> bool:
    """Create or refresh the runtime's venv; False when it was already up to date."""
    interpreter = find_interpreter(runtime)
    stamp = runtime.venv / STAMP
    wanted = stamp_for(runtime, interpreter)
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        say(f"runtime {runtime.name}: up to date ({runtime.venv})")
        return False
    say(f"runtime {runtime.name}: creating {runtime.venv} with {interpreter} (Python {runtime.python_version})")
    if runtime.venv.exists():
        shutil.rmtree(runtime.venv)
    _run([str(interpreter), "-m", "venv", str(runtime.venv)])
    (runtime.venv / ".gitignore").write_text("*\n")
    # Python 3.6's bundled pip 18.1 misreads pip constraint files: upgrade pip before anything else.
    say(f"runtime {runtime.name}: pip {runtime.pip_version}")
    _run([str(runtime.python), "-m", "pip", "install", "--quiet", f"pip=={runtime.pip_version}"])
    say(f"runtime {runtime.name}: installing {runtime.requirements.relative_to(runtime.requirements.parents[1])} "
        "(framework, numpy, Pillow, toolkit, model server, Java)")
    _run([str(runtime.python), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(runtime.requirements)])
    _run([str(runtime.python), "-m", "pip", "check"])
    stamp.write_text(wanted + "\n")
    say(f"runtime {runtime.name}: ready")
    return True


def _run(command: List[str]) -> None:
    # pip's warnings about unreachable local indexes are noise here; its errors still reach stderr.
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if "is ignored: it is neither a file" not in line]
        raise ConfigError(f"`{' '.join(command)}` failed:\n" + "\n".join(lines[-30:]))


def runtimes_for_config(config_dir: Path) -> List[Runtime]:
    from config import load_config

    config = load_config(config_dir)
    needed = {}
    for environment in config.environments:
        for deployment in environment.models:
            target = deployment.target
            runtime = runtime_for(target.framework, target.framework_version, target.profile, where=f"model {deployment.name!r}")
            needed[runtime.name] = runtime
    return [needed[name] for name in sorted(needed)]


def _selected(args: argparse.Namespace) -> Iterable[Runtime]:
    if args.all:
        return list(RUNTIMES.values())
    if args.names:
        unknown = [name for name in args.names if name not in RUNTIMES]
        if unknown:
            raise ConfigError(f"no runtime named {', '.join(unknown)}; runtimes: {', '.join(RUNTIMES)}")
        return [RUNTIMES[name] for name in args.names]
    return runtimes_for_config(Path(args.config))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    setup_parser = commands.add_parser("setup", help="build the runtimes' venvs")
    setup_parser.add_argument("names", nargs="*", help="runtime names (default: those the configuration needs)")
    setup_parser.add_argument("--all", action="store_true", help="every runtime")
    setup_parser.add_argument("--config", default="config", help="config directory (default: config)")
    commands.add_parser("list", help="the runtimes and whether their venvs are built")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for runtime in RUNTIMES.values():
                state = "built" if runtime.installed else "not built"
                print(f"{runtime.name:20} {runtime.image:42} Python {runtime.python_version:5} {state}")
            return 0
        for runtime in _selected(args):
            setup(runtime)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
