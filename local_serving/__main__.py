"""CLI: `python -m local_serving serve` (what `make serve` runs) and `python -m local_serving invoke`.

serve   extracts build/artifacts/<model>/model.tar.gz as the container would and serves it with the
        real SageMaker PyTorch serving stack on localhost until Ctrl-C.
invoke  sends an example image (or --file) to a running server and prints the answer.
"""
import argparse
import json
import signal
import sys
from pathlib import Path
from typing import List

DEFAULT_PORT = 8080  # the port SageMaker sends /invocations to
PAYLOADS = ("image/jpeg", "image/png", "application/json", "application/x-npy")


def serve(args: argparse.Namespace) -> int:
    from config import ConfigError, load_config
    from config.container import container_environment
    from local_serving.server import LocalEndpoint, ServerError
    from model_artifacts.manifest import load_built_artifact

    try:
        config = load_config(args.config)
        deployment = next((d for d in config.environments[0].models if d.name == args.model), None)
        if deployment is None:
            raise ConfigError(f"--model {args.model}: no such model; configured: {', '.join(config.models)}")
        artifact = load_built_artifact(Path(args.artifacts_dir), deployment)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    endpoint = LocalEndpoint(
        artifact.directory / artifact.manifest["artifact"],
        artifact.manifest["input_shape"],
        Path(args.work_dir) / args.model,
        container_environment(deployment.spec),
        port=args.port,
    )
    print(f"starting SageMaker PyTorch serving (TorchServe) for {args.model} (sha256 {artifact.sha256[:12]}) ...", flush=True)
    # SIGTERM (e.g. from a process manager) stops the server the same way Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    endpoint.start()
    try:
        seconds = endpoint.wait_until_ready()
        print(f"ready in {seconds:.1f}s: POST {endpoint.url}  (logs: {endpoint.work_dir / 'logs'}; Ctrl-C stops)", flush=True)
        print(f"try: make invoke PORT={endpoint.port}", flush=True)
        endpoint.process.wait()
        print(f"error: the server exited:\n{endpoint.log_tail()}", file=sys.stderr)
        return 1
    except ServerError as error:
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
    elif document is not None:
        print(json.dumps(document))
    else:
        print(f"{len(answer.body)} bytes")
    return 0 if answer.status == 200 else 1


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


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve a built artifact on localhost")
    serve_parser.add_argument("--model", default="image-classifier")
    serve_parser.add_argument("--config", default="config")
    serve_parser.add_argument("--artifacts-dir", default="build/artifacts")
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
