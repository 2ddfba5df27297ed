"""Deploy rehearsal: every synthesized stack deployed, in dependency order and with its assets staged, into a
local emulation of the AWS APIs (moto, in process), then updated by later assemblies; nothing reaches AWS.

    python -m deploy_rehearsal cdk.out [--then OTHER_CDK_OUT ...]
"""
from deploy_rehearsal.assembly import AssemblyError, read_assembly
from deploy_rehearsal.rehearsal import BOOTSTRAP_VERSION, Rehearsal, RehearsalFailed, Report, rehearse
from deploy_rehearsal.resource_types import StubGuardError, check_stand_ins, moto_implemented_types

__all__ = ["AssemblyError", "BOOTSTRAP_VERSION", "Rehearsal", "RehearsalFailed", "Report", "StubGuardError",
           "check_stand_ins", "moto_implemented_types", "read_assembly", "rehearse"]
