"""python -m deploy_rehearsal [CDK_OUT] [--then CDK_OUT ...]: exit 0 when every stack deployed (and updated)."""
import argparse
import sys
from pathlib import Path

from deploy_rehearsal.assembly import AssemblyError
from deploy_rehearsal.rehearsal import RehearsalFailed, rehearse
from deploy_rehearsal.resource_types import StubGuardError
from deploy_rehearsal.verify import VerificationFailed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_rehearsal", description=__doc__)
    parser.add_argument("cdk_out", nargs="?", default="cdk.out", help="the synthesized assembly to deploy (default cdk.out)")
    parser.add_argument("--then", action="append", default=[], metavar="CDK_OUT",
                        help="an assembly to deploy next, as an update (repeatable, in order)")
    args = parser.parse_args(argv)
    try:
        report = rehearse([Path(args.cdk_out)] + [Path(p) for p in args.then])
    except (AssemblyError, RehearsalFailed, StubGuardError, VerificationFailed) as error:
        print(f"deploy rehearsal failed: {error}", file=sys.stderr)
        return 1
    print(report.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
