"""CLI: `python -m local_serving serve` (what `make serve` runs) and `python -m local_serving invoke`.

serve   builds the model's artifact for a serving runtime (in that runtime's venv, as `make artifacts`
        does), extracts it as the container would and serves it on localhost with the runtime's own
        SageMaker serving stack until Ctrl-C:
          image-classifier  multi-model-server 1.1.2 + sagemaker-pytorch-inference 1.5 on Python 3.6 (EIA
                            runtimes), TorchServe + sagemaker-pytorch-inference 2.0 on Python 3.12 (2.6.0)
          object-detector   mxnet-model-server 1.0.5 + sagemaker-mxnet-inference 1.2.3 on Python 3.6 (EIA
                            1.4.1), multi-model-server 1.1.8 + sagemaker-mxnet-inference 1.5.5 on Python 3.8 (1.9.0)
        --runtime picks the runtime (default: the configured profile's):
          a runtime name   eia-pytorch-1.5.1, eia-pytorch-1.3.1, eia-mxnet-1.4.1 (the eia profile at that
                           version), pytorch-2.6.0, mxnet-1.9.0 (the cpu profile)
          a profile        eia, gpu, cpu, serverless, async (its configured framework version),
                           or PROFILE-VERSION, e.g. eia-1.3.1
invoke  sends an example image (or --file) to a running server and prints the answer. The detector takes
        the base64 JSON contract only: --content-type application/json (`make invoke CONTENT_TYPE=application/json`).
async   simulates the async profile's contract (InvokeEndpointAsync) against a running server: the request from
        --input FILE (default: the example image, written to OUTPUT/input/), the answer written to
        OUTPUT/output/<id>.out, a failure to OUTPUT/failures/<id>-error.out (`make invoke-async`).
"""
import argparse
import json
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Tuple

DEFAULT_PORT = 8080  # the port SageMaker sends /invocations to
PAYLOADS = ("image/jpeg", "image/png", "application/json", "application/x-npy")
DEFAULT_ARTIFACTS_DIR = "build/serve/artifacts"  # one directory per runtime: never build/artifacts, which synth deploys
# The detector (inference_src/mxnet_ssd) takes one image as {"image": <base64>, "short": N} JSON only.
INVOKE_HINTS = {"mxnet": " CONTENT_TYPE=application/json"}
DETECTIONS_SHOWN = 5


@dataclass(frozen=True)
class Selection:
    """What `serve` serves: one model, resolved for one serving runtime."""

    deployment: object  # config.ModelDeployment, with the profile and framework version picked
    runtime: object  # runtimes.Runtime
    label: str  # <profile>-<framework version>, e.g. eia-1.3.1

    @property
    def name(self) -> str:
        return self.deployment.name


def _accepted_runtimes(framework: str) -> List[str]:
    """What RUNTIME= accepts for a model of that framework: its runtimes, the profiles, eia-<version>."""
    from config.schema import Profile
    from runtimes import RUNTIMES

    profiles = list(Profile.__args__)
    versions = [f"eia-{r.framework_version}" for r in RUNTIMES.values() if r.accelerated and r.framework == framework]
    named = [name for name, r in RUNTIMES.items() if r.framework == framework]
    return named + profiles + versions


def parse_runtime(value: str, framework: str = "pytorch") -> Tuple[str, Optional[str], Optional[object]]:
    """--runtime -> (profile, framework version or None for the configured one, the Runtime if one was named);
    `framework` (the model's) only names the choices in the error."""
    from config import ConfigError
    from config.schema import Profile
    from runtimes import RUNTIMES

    profiles = Profile.__args__
    if value in RUNTIMES:
        runtime = RUNTIMES[value]
        return ("eia" if runtime.accelerated else "cpu"), runtime.framework_version, runtime
    if value in profiles:
        return value, None, None
    profile, _, version = value.partition("-")
    if profile in profiles and version and all(part.isdigit() for part in version.split(".")):
        return profile, version, None
    raise ConfigError(f"RUNTIME={value}: no such runtime or profile; one of: {', '.join(_accepted_runtimes(framework))}")


def select(config, model: str, runtime_value: Optional[str]) -> Selection:
    """The model's deployment for `runtime_value` (None: as configured) and the local runtime that serves it."""
    from config import ConfigError
    from config.loader import resolve_in_region
    from config.schema import ProfileSettings
    from runtimes import runtime_for

    environment = config.environments[0]  # every environment deploys the same model spec
    deployment = next((d for d in environment.models if d.name == model), None)
    if deployment is None:
        raise ConfigError(f"--model {model}: no such model; configured: {', '.join(config.models)}")
    spec = deployment.spec
    if runtime_value:
        profile, version, named = parse_runtime(runtime_value, spec.framework)
        if named is not None and named.framework != spec.framework:
            raise ConfigError(f"RUNTIME={runtime_value} serves {named.framework}, but model {model!r} is a {spec.framework} "
                              f"model; one of: {', '.join(_accepted_runtimes(spec.framework))}")
        settings = spec.serving.profiles.get(profile) or ProfileSettings()
        if version:
            settings = settings.model_copy(update={"framework_version": version})
        serving = spec.serving.model_copy(update={"profile": profile, "profiles": {**spec.serving.profiles, profile: settings}})
        # Checked like the configuration itself: image tables, accelerator, recipe for that runtime.
        try:
            deployment = resolve_in_region(model, spec.model_copy(update={"serving": serving}), environment.region)
        except ConfigError as error:
            raise ConfigError(f"RUNTIME={runtime_value}: {error}") from None
    target = deployment.target
    runtime = runtime_for(target.framework, target.framework_version, target.profile, where=f"model {model!r}")
    return Selection(deployment, runtime, f"{target.profile}-{target.framework_version}")


def build(config, selection: Selection, artifacts_dir: Path, weights_root: Path) -> Tuple[Path, dict]:
    """The selection's model.tar.gz, built in its runtime's venv (a no-op when up to date)."""
    from model_artifacts.build import build_artifact
    from model_artifacts.progress import make_reporter
    from model_artifacts.requests import build_requests

    environment = replace(config.environments[0], models=(selection.deployment,))
    [request] = build_requests(replace(config, environments=(environment,)), only=[selection.name], weights_root=weights_root)
    out_dir = artifacts_dir / selection.label / selection.name
    manifest = build_artifact(request, out_dir, make_reporter())
    return out_dir / manifest["artifact"], manifest


def serve(args: argparse.Namespace) -> int:
    from config import ConfigError, load_config
    from config.container import container_environment
    from local_serving.server import LocalEndpoint, ServerError, installed_model_server

    sys.path.insert(0, os.getcwd())  # model factories are imported from the working directory, as the build does
    try:
        config = load_config(args.config)
        selection = select(config, args.model, args.runtime)
        selection.runtime.require()  # before the build: the fix for a missing venv, in one line
        artifact, manifest = build(config, selection, Path(args.artifacts_dir), Path(args.config).resolve().parent)
        endpoint = LocalEndpoint(artifact, manifest["input_shape"], Path(args.work_dir) / args.model,
                                 container_environment(selection.deployment), selection.runtime, port=args.port)
    except (ConfigError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runtime = selection.runtime
    workers, threads = endpoint.container_env["SAGEMAKER_MODEL_SERVER_WORKERS"], endpoint.container_env["OMP_NUM_THREADS"]
    print(f"starting {runtime.image} ({runtime.name}: {installed_model_server(runtime)}, Python {runtime.python_version}, "
          f"{runtime.framework} {runtime.framework_version}) for {args.model} ({selection.label}, recipe {manifest['recipe']}, "
          f"sha256 {manifest['sha256'][:12]}; {workers} worker(s) x {threads} thread(s), as the endpoint on "
          f"{selection.deployment.target.instance_type or 'serverless'}) ...", flush=True)
    # SIGTERM (e.g. from a process manager) stops the server the same way Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        endpoint.start()
        seconds = endpoint.wait_until_ready()
        print(f"ready in {seconds:.1f}s: POST {endpoint.url}  (logs: {endpoint.log_file}; Ctrl-C stops)", flush=True)
        print(f"try: make invoke PORT={endpoint.port}{INVOKE_HINTS.get(runtime.framework, '')}", flush=True)
        if selection.deployment.target.is_async:  # the endpoint is called through S3: its contract, simulated
            print(f"or:  make invoke-async PORT={endpoint.port} INPUT=<request file> OUTPUT_DIR=build/async", flush=True)
        endpoint.process.wait()
        print(f"error: the server exited:\n{endpoint.log_tail()}", file=sys.stderr)
        return 1
    except (ConfigError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        endpoint.stop()


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def invoke_command(args: argparse.Namespace) -> int:
    from local_serving import client

    body = _payload(args)
    try:
        answer = client.invoke(f"http://127.0.0.1:{args.port}/invocations", body, args.content_type, args.accept)
    except OSError as error:
        print(f"error: no server on port {args.port} ({error}); start one with `make serve`", file=sys.stderr)
        return 1
    print(f"HTTP {answer.status} {answer.content_type}")
    document = answer.json() if answer.content_type.startswith("application/json") else None
    if document and "predictions" in document:
        print(f"shape {document['shape']}")
        for index, row in enumerate(document["predictions"]):
            print(f"input {index}: " + ", ".join(f"class {p['class']} ({p['score']:.4f})" for p in row))
    elif document and "bbox" in document:
        _print_detections(document)
    elif document is not None:
        print(json.dumps(document))
    else:
        # The 1.x toolkit (EIA images) answers errors as text, with a traceback after the first line.
        text = answer.body.decode("utf-8", "replace") if answer.status >= 400 else ""
        print(text.splitlines()[0] if text.strip() else f"{len(answer.body)} bytes")
    return 0 if answer.status == 200 else 1


def _print_detections(document: dict) -> None:
    """The detector's answer: its input shape and its best detections (-1 rows are empty)."""
    rows = [(score[0], cid[0], bbox) for cid, score, bbox in zip(document["cid"], document["score"], document["bbox"]) if cid[0] >= 0]
    print(f"shape {document['shape']}, {len(rows)} detections")
    for score, cid, bbox in sorted(rows, key=lambda row: -row[0])[:DETECTIONS_SHOWN]:
        print(f"class {int(cid)} ({score:.4f}) box [{', '.join(f'{value:.1f}' for value in bbox)}]")


def _payload(args: argparse.Namespace) -> bytes:
    import numpy as np

    from local_serving import client

    if args.file:
        data = Path(args.file).read_bytes()
    elif args.content_type == "application/x-npy":
        data = client.npy(np.random.default_rng(0).standard_normal((1, *args.npy_shape)).astype(np.float32))
    else:
        data = client.example_image("PNG" if args.content_type == "image/png" else "JPEG")
    if args.content_type in ("application/x-npy", "image/jpeg", "image/png"):
        return data
    return client.base64_image_request([data], short=args.short)


def async_command(args: argparse.Namespace) -> int:
    """python -m local_serving async: one InvokeEndpointAsync, simulated (local_serving/async_simulation.py)."""
    from local_serving import async_simulation as simulation

    out_dir = Path(args.output)
    try:
        request_file = Path(args.input) if args.input else _example_request(out_dir, args.content_type)
        content_type = simulation.content_type_for(request_file, args.content_type)
        result = simulation.simulate(f"http://127.0.0.1:{args.port}/invocations", request_file, out_dir, content_type,
                                     args.accept, args.inference_id, args.timeout)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except simulation.NoServer as error:
        print(f"error: {error}; start one with `make serve`", file=sys.stderr)
        return 1
    print(f"InferenceId: {result.inference_id}  (request {request_file}, {content_type})")
    print(f"{'OutputLocation' if result.succeeded else 'FailureLocation'}: {result.location}")
    answered = f"HTTP {result.status} {result.content_type}" if result.status else "no answer"
    print(f"{answered}, {len(result.body)} bytes")
    if not result.succeeded:
        text = result.body.decode("utf-8", "replace")  # the 1.x toolkit appends a traceback: its first line says why
        print(text.splitlines()[0] if text.strip() else "(empty body)")
    return 0 if result.succeeded else 1


def _example_request(out_dir: Path, content_type: Optional[str]) -> Path:
    """The example image (or its base64 JSON contract) as a request file, as a client would upload it to input/."""
    from local_serving import client

    image = client.example_image("PNG" if content_type == "image/png" else "JPEG")
    documents = {"image/jpeg": ("example.jpg", image), "image/png": ("example.png", image),
                 "application/json": ("example.json", client.base64_image_request([image]))}
    if (content_type or "image/jpeg") not in documents:
        raise ValueError(f"no example request for {content_type}: pass --input FILE")
    name, data = documents[content_type or "image/jpeg"]
    request_file = out_dir / "input" / name
    request_file.parent.mkdir(parents=True, exist_ok=True)
    request_file.write_bytes(data)
    return request_file


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="build a model for a serving runtime and serve it on localhost")
    serve_parser.add_argument("--model", default="image-classifier")
    serve_parser.add_argument("--runtime", help="runtime name or profile (default: the configured profile's runtime)")
    serve_parser.add_argument("--config", default="config")
    serve_parser.add_argument("--artifacts-dir", default=DEFAULT_ARTIFACTS_DIR,
                              help=f"where it builds (default: {DEFAULT_ARTIFACTS_DIR}/<profile>-<version>/<model>)")
    serve_parser.add_argument("--work-dir", default="build/serve", help="stands in for /opt/ml (default: build/serve/<model>)")
    serve_parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve_parser.set_defaults(run=serve)
    invoke_parser = commands.add_parser("invoke", help="send an example request to a running server")
    invoke_parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    invoke_parser.add_argument("--content-type", choices=PAYLOADS, default="image/jpeg",
                               help="application/json sends the base64 contract {\"image\": ..., \"short\": N}")
    invoke_parser.add_argument("--accept", default="application/json")
    invoke_parser.add_argument("--file", help="a JPEG/PNG (or .npy) to send instead of the generated example")
    invoke_parser.add_argument("--short", type=int, help="short side to resize to (application/json only)")
    invoke_parser.add_argument("--npy-shape", type=int, nargs=3, default=(3, 224, 224), metavar=("C", "H", "W"))
    invoke_parser.set_defaults(run=invoke_command)
    async_parser = commands.add_parser("async", help="simulate an async invocation: request from a file, answer to a folder")
    async_parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    async_parser.add_argument("--input", help="the request (InputLocation); default: the example image, written to OUTPUT/input/")
    async_parser.add_argument("--output", default="build/async", help="output/ and failures/ go here (default: build/async)")
    async_parser.add_argument("--content-type", choices=PAYLOADS, help="default: from --input's extension, else image/jpeg")
    async_parser.add_argument("--accept", default="application/json")
    async_parser.add_argument("--inference-id", help="names the answer's file (default: a new uuid, as SageMaker does)")
    async_parser.add_argument("--timeout", type=float, default=900.0,
                              help="seconds before the request fails, InvocationTimeoutSeconds (default: %(default)s)")
    async_parser.set_defaults(run=async_command)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
