"""python -m smoke_test --endpoint-name A [--endpoint-name B ...] [--detector-endpoint-name D ...]: checks every
endpoint (a few at a time), prints PASS or FAIL per endpoint and a summary line; exit 0 when all pass, 1 when any
fails, 2 on usage errors. --async-endpoint-name / --async-detector-endpoint-name (serving.profile: async) are called
through S3 and their answers polled there (smoke_test/async_check.py), after the real-time endpoints.

Runs after a deployment (the pipeline's CodeBuild step, in the tools account; one step per stage checks all of the
stage's endpoints), so every failure is one line that says what went wrong and where to look, never a traceback.
"""
import argparse
import os
import sys
import threading
from typing import List, Optional

from smoke_test.async_check import DEFAULT_WAIT_SECONDS, check_async_endpoints, make_s3_client
from smoke_test.check import (BUG_HINT, CONTENT_TYPES, DEFAULT_PARALLEL, MAX_PARALLEL, WAKE_TIMEOUT_SECONDS,
                              SmokeTestFailure, check_endpoints, make_clients, one_line, summary)

DESCRIPTION = ("Check that deployed SageMaker endpoints are InService and answer the example image: classifiers "
               "with their classes, MXNet SSD detectors with detections.")
USAGE = ("python -m smoke_test [--endpoint-name NAME ...] [--detector-endpoint-name NAME ...] [--detector] "
         "[--region R] [--assume-role-arn ARN] [--expected-classes N] [--content-type TYPE] [--timeout SECONDS] "
         "[--parallel N] [--wake-timeout SECONDS] [--async-endpoint-name NAME ...] [--async-detector-endpoint-name NAME ...] [--async-wait SECONDS]")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smoke_test", usage=USAGE, description=DESCRIPTION)
    # Both append (name, detector) to one list, so the endpoints are checked and reported in the order given.
    parser.add_argument("--endpoint-name", dest="endpoints", action="append", default=[], metavar="NAME",
                        type=lambda name: (name, False),
                        help="a classifier endpoint; repeat for more. Default, when no endpoint is given: "
                             "$ENDPOINT_NAME")
    parser.add_argument("--detector-endpoint-name", dest="endpoints", action="append", metavar="NAME",
                        type=lambda name: (name, True),
                        help="an MXNet SSD endpoint: sent the base64 JSON contract, expected to answer "
                             "cid/score/bbox; repeat for more")
    # Async endpoints (serving.profile: async) get the request through S3 and answer there (smoke_test/async_check.py).
    parser.add_argument("--async-endpoint-name", dest="async_endpoints", action="append", default=[], metavar="NAME",
                        type=lambda name: (name, False),
                        help="an async classifier endpoint: the example uploaded to its input prefix, "
                             "InvokeEndpointAsync, the answer polled from S3; repeat for more")
    parser.add_argument("--async-detector-endpoint-name", dest="async_endpoints", action="append", metavar="NAME",
                        type=lambda name: (name, True), help="an async MXNet SSD endpoint; repeat for more")
    parser.add_argument("--async-wait", type=positive_float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                        help="wait this long for each async answer (default: %(default)s: an endpoint scaled to "
                             "zero starts an instance first)")
    parser.add_argument("--detector", action="store_true",
                        help="check the --endpoint-name endpoints as detectors too (the single-endpoint form)")
    parser.add_argument("--region", help="default: $AWS_REGION, then $AWS_DEFAULT_REGION")
    parser.add_argument("--assume-role-arn", metavar="ARN",
                        help="role in the endpoints' account to call them as; default: $SMOKE_TEST_ROLE_ARN, else none")
    parser.add_argument("--expected-classes", type=positive_int, metavar="N",
                        help="every classifier's number of classes; default: any")
    parser.add_argument("--content-type", choices=CONTENT_TYPES, default=CONTENT_TYPES[0],
                        help="send classifiers the example JPEG as is, or as {\"image\": <base64>} "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=positive_float, default=60.0, metavar="SECONDS",
                        help="wait this long for each answer (default: %(default)s, SageMaker's own limit)")
    parser.add_argument("--wake-timeout", type=positive_float, default=WAKE_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="an endpoint whose model scaled to zero (scaling.min_instances: 0) gets one request to "
                             "wake it, then this long to start a copy (default: %(default)s)")
    parser.add_argument("--parallel", type=parallel_count, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"check up to N endpoints at a time, 1 to {MAX_PARALLEL} (default: %(default)s)")
    args = parser.parse_args(argv)
    # An empty value counts as not given: build specs pass "$VARIABLE", which may be unset.
    endpoints = [(name, detector or args.detector) for name, detector in args.endpoints if name]
    async_endpoints = [(name, detector or args.detector) for name, detector in args.async_endpoints if name]
    if not endpoints and not async_endpoints and os.environ.get("ENDPOINT_NAME"):
        endpoints = [(os.environ["ENDPOINT_NAME"], args.detector)]
    args.region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    args.assume_role_arn = args.assume_role_arn or os.environ.get("SMOKE_TEST_ROLE_ARN") or None
    if not endpoints and not async_endpoints:
        parser.error("missing endpoint name: pass --endpoint-name or --detector-endpoint-name (each repeatable), "
                     "or set ENDPOINT_NAME")
    names = [name for name, _ in endpoints + async_endpoints]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"endpoint given more than once: {', '.join(repeated)}")
    args.endpoints, args.async_endpoints = endpoints, async_endpoints
    return args


def positive_int(text: str) -> int:
    return _positive(int(text))


def positive_float(text: str) -> float:
    return _positive(float(text))


def parallel_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PARALLEL:
        raise ValueError(value)  # argparse turns it into "invalid parallel_count value: '11'"
    return value


def _positive(value):
    if value <= 0:
        raise ValueError(value)  # argparse turns it into "invalid positive_int value: '0'"
    return value


_output = threading.Lock()


def say(line: str) -> None:
    """One whole line at a time from any thread (print writes the text and its newline separately), flushed at once:
    CodeBuild interleaves the build's output."""
    with _output:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: Optional[List[str]] = None, clients=make_clients, s3_client=make_s3_client) -> int:
    args = parse_args(argv)
    try:  # the clients are made once, then shared by every endpoint's check
        sagemaker, runtime = clients(args.region, args.assume_role_arn, args.timeout)
        s3 = s3_client(args.region, args.assume_role_arn, args.timeout) if args.async_endpoints else None
    except SmokeTestFailure as failure:  # no endpoint can be checked: one line for all
        return _failed(str(failure))
    except Exception as error:
        return _failed(f"unexpected {type(error).__name__}: {one_line(str(error))} ({BUG_HINT})")
    outcomes = check_endpoints(sagemaker, runtime, args.endpoints, args.expected_classes, args.content_type,
                               log=say, parallel=args.parallel, wake_timeout=args.wake_timeout) if args.endpoints else []
    if args.async_endpoints:  # after the real-time ones, which answer in seconds
        outcomes += check_async_endpoints(sagemaker, runtime, s3, args.async_endpoints, args.expected_classes,
                                          args.content_type, log=say, parallel=args.parallel,
                                          wait_seconds=args.async_wait)
    say(summary(outcomes))
    return 0 if all(outcome.passed for outcome in outcomes) else 1


def _failed(message: str) -> int:
    print(f"smoke test failed: {message}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
