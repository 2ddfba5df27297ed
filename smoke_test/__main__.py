"""python -m smoke_test --endpoint-name NAME: exit 0 when the endpoint answers well, 1 on failure, 2 on usage errors.

Runs after a deployment (the pipeline's CodeBuild step, in the tools account), so every failure is one line
that says what went wrong and where to look, never a traceback.
"""
import argparse
import os
import sys
from functools import partial
from typing import List, Optional

from smoke_test.check import CONTENT_TYPES, SmokeTestFailure, make_clients, one_line, run_smoke_test

DESCRIPTION = "Check that a deployed SageMaker endpoint is InService and classifies the example image."


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smoke_test", description=DESCRIPTION)
    parser.add_argument("--endpoint-name", metavar="NAME", help="default: $ENDPOINT_NAME")
    parser.add_argument("--region", help="default: $AWS_REGION, then $AWS_DEFAULT_REGION")
    parser.add_argument("--assume-role-arn", metavar="ARN",
                        help="role in the endpoint's account to call it as; default: $SMOKE_TEST_ROLE_ARN, else none")
    parser.add_argument("--expected-classes", type=positive_int, metavar="N",
                        help="the model's number of classes; default: any")
    parser.add_argument("--content-type", choices=CONTENT_TYPES, default=CONTENT_TYPES[0],
                        help="send the example JPEG as is, or as {\"image\": <base64>} (default: %(default)s)")
    parser.add_argument("--detector", action="store_true",
                        help="the MXNet SSD endpoint: send the base64 JSON contract, expect cid/score/bbox")
    parser.add_argument("--timeout", type=positive_float, default=60.0, metavar="SECONDS",
                        help="wait this long for an answer (default: %(default)s, SageMaker's own limit)")
    args = parser.parse_args(argv)
    # An empty value counts as not given: build specs pass "$VARIABLE", which may be unset.
    args.endpoint_name = args.endpoint_name or os.environ.get("ENDPOINT_NAME")
    args.region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    args.assume_role_arn = args.assume_role_arn or os.environ.get("SMOKE_TEST_ROLE_ARN") or None
    if not args.endpoint_name:
        parser.error("missing endpoint name: pass --endpoint-name or set ENDPOINT_NAME")
    return args


def positive_int(text: str) -> int:
    return _positive(int(text))


def positive_float(text: str) -> float:
    return _positive(float(text))


def _positive(value):
    if value <= 0:
        raise ValueError(value)  # argparse turns it into "invalid positive_int value: '0'"
    return value


def main(argv: Optional[List[str]] = None, clients=make_clients) -> int:
    args = parse_args(argv)
    try:
        sagemaker, runtime = clients(args.region, args.assume_role_arn, args.timeout)
        run_smoke_test(sagemaker, runtime, args.endpoint_name, args.expected_classes, args.content_type,
                       log=partial(print, flush=True), detector=args.detector)  # flushed: CodeBuild interleaves output
    except SmokeTestFailure as failure:
        return _failed(str(failure))
    except Exception as error:  # a bug here must still fail the pipeline with one readable line
        return _failed(f"unexpected {type(error).__name__}: {one_line(str(error))} "
                       f"(a bug in smoke_test/: run it locally with the same arguments)")
    return 0


def _failed(message: str) -> int:
    print(f"smoke test failed: {message}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
