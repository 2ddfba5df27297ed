#!/usr/bin/env python3
"""CDK app: reads config/, builds one Stage per environment. Run through `npx cdk` (see README)."""
import os
import sys
from pathlib import Path

import aws_cdk as cdk

from config import ConfigError, load_config
from stacks import cloudformation_quotas
from stacks.application import add_stages


def main() -> int:
    # No stack traces in cdk.out's metadata: they hold temporary jsii paths, different on every run.
    app = cdk.App(stack_traces=False)
    config_dir = Path(app.node.try_get_context("config_dir") or "config")
    artifacts_dir = Path(app.node.try_get_context("artifacts_dir") or "build/artifacts")
    try:
        config = load_config(config_dir, name_prefix=_name_prefix(app))
        config = config.with_accounts(_real_accounts(app, [env.name for env in config.environments] + ["pipeline"]))
        only_models = app.node.try_get_context("only_models")
        if only_models is not None:  # `-c only_models=a,b`: what infra_diff synthesizes when only model files changed
            config = config.only_models(name for name in str(only_models).split(",") if name)
        add_stages(app, config, artifacts_dir=artifacts_dir, config_dir=config_dir)
    except ConfigError as error:
        print(f"\nConfiguration error (nothing was synthesized):\n{error}\n", file=sys.stderr)
        return 1
    try:
        assembly = app.synth()
    except RuntimeError as error:  # what jsii raises for any error in the CDK, with the CDK's message
        print(synthesis_failure(str(error)), file=sys.stderr)
        return 1
    errors, warnings = cloudformation_quotas.check((s.display_name, Path(s.template_full_path)) for s in assembly.stacks_recursively)
    for message in warnings:
        print(f"Warning: {message}", file=sys.stderr)
    if errors:
        print("\nSynthesis refused: over a quota (nothing was deployed):\n" + "\n".join(errors), file=sys.stderr)
        return 1
    return 0


def synthesis_failure(message: str) -> str:
    """The CDK's own reason, without the JavaScript stack jsii appends; the policy report is printed above it."""
    reason = "\n".join(line for line in message.splitlines() if not line.lstrip().startswith("at ")).strip()
    if reason.startswith("ValidationFailed:"):  # cdk-nag's findings, each printed above with its fix
        return f"\nSynthesis refused by policy validation: the report above lists each finding and how to fix or acknowledge it.\n{reason}"
    return f"\nSynthesis failed (nothing was synthesized or deployed):\n{reason}"


def _name_prefix(app: cdk.App):
    """A second copy's qualifier from `-c name_prefix=...` or NAME_PREFIX, else config/app.yaml's."""
    value = app.node.try_get_context("name_prefix")
    return str(value) if value is not None else os.environ.get("NAME_PREFIX")


def _real_accounts(app: cdk.App, names):
    """Real account ids, from `-c <env>_account=...` or <ENV>_ACCOUNT_ID; the YAML holds placeholders."""
    accounts = {}
    for name in names:
        value = app.node.try_get_context(f"{name}_account") or os.environ.get(f"{name.upper()}_ACCOUNT_ID")
        if value:
            accounts[name] = str(value)
    return accounts


if __name__ == "__main__":
    sys.exit(main())
