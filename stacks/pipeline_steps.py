"""The pipeline's CodeBuild steps: the runtime export, synth (tests + synth), the smoke test.

Why the export step: the serving image decides which TorchScript it can load (torch 1.5.1 in the
EIA image refuses archives written by torch 2.x). So each model is converted by the runtime's own
torch, inside the runtime's own Deep Learning Container image (the image URI the endpoint uses,
from the SageMaker SDK tables), and the synth step only packages that archive.
"""
import json
import math
from pathlib import Path
from typing import Collection, Dict, Mapping, Sequence

from aws_cdk import CfnOutput, Duration, Stack, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from config import AppConfig, ModelDeployment
from config.partitions import partition_of
from config.serving_targets import image_registry_and_repository
from runtimes import RUNTIMES as SERVING_RUNTIMES
from smoke_test.async_check import DEFAULT_WAIT_SECONDS as ASYNC_WAIT_SECONDS

REPO = Path(__file__).resolve().parent.parent
# PyPI's Linux torch wheel pulls several GB of CUDA; the CPU build is all the build step needs.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# AL2023 standard 5.0: Python 3.11 and Node 20, the versions the Makefile and package.json expect.
BUILD_IMAGE = codebuild.LinuxBuildImage.AMAZON_LINUX_2_5
RUNTIMES = codebuild.BuildSpec.from_object({"phases": {"install": {"runtime-versions": {"python": "3.11", "nodejs": "20"}}}})


def cdk_cli_version() -> str:
    """The CLI the repository pins (package.json), so self-mutation runs the same CLI as developers."""
    return json.loads((REPO / "package.json").read_text())["devDependencies"]["aws-cdk"]


def account_environment(config: AppConfig) -> Dict[str, str]:
    """The real account ids this synthesis used, so the pipeline's own synth targets the same accounts."""
    accounts = {f"{env.name.upper()}_ACCOUNT_ID": env.account for env in config.environments}
    accounts["PIPELINE_ACCOUNT_ID"] = config.pipeline.account
    return accounts


RUNTIME_EXPORT_DIR = "build/runtime-export"
RUNTIME_EXPORT_STEP_PREFIX = "RuntimeExport-"
# Where Synth finds each runtime's export (<dir>/<runtime>/<model>/), merged into RUNTIME_EXPORT_DIR/<model>/.
RUNTIME_EXPORT_PARTS_DIR = "build/runtime-export-parts"
MERGE_RUNTIME_EXPORTS_COMMAND = f"mkdir -p {RUNTIME_EXPORT_DIR} && cp -R {RUNTIME_EXPORT_PARTS_DIR}/*/. {RUNTIME_EXPORT_DIR}/"


# The synth output (cdk.out) carries the staged assets, the model.tar.gz files included (up to 5 GiB each): the
# Assets stage publishes them from it. CodePipeline caps a CloudFormation action's input artifact at 256 MB, and the
# deploy actions read only templates and their template configurations, so they get a copy of the assembly without
# the staged assets (every `asset.*` entry, at any depth: files such as asset.<hash>.tar.gz and directories).
# CodePipeline quota: "Maximum size of input artifacts for AWS CloudFormation actions: 256 MB".
CLOUDFORMATION_INPUT_MAX_BYTES = 256 * 1024 ** 2
ASSEMBLY_DIR = "cdk.out"
TEMPLATES_ONLY_DIR = "cdk.templates"
STAGED_ASSET_PATTERN = "asset.*"
TEMPLATES_ONLY_COMMAND = (
    f"rm -rf {TEMPLATES_ONLY_DIR} && python -c \"import shutil; shutil.copytree('{ASSEMBLY_DIR}', '{TEMPLATES_ONLY_DIR}', "
    f"ignore=shutil.ignore_patterns('{STAGED_ASSET_PATTERN}'))\""
)


MICROMAMBA_URL = "https://micro.mamba.pm/api/micromamba/linux-64/latest"
RUNTIME_PYTHONS_DIR = "/opt/runtime-pythons"


def runtime_pythons():
    return sorted({runtime.python_version for runtime in SERVING_RUNTIMES.values()}, key=lambda v: tuple(map(int, v.split("."))))


def runtime_python_variables() -> Dict[str, str]:
    """PYTHON36=/opt/runtime-pythons/3.6/bin/python3.6 ...: where the runtimes' setup looks first."""
    from runtimes.__main__ import interpreter_variable

    return {interpreter_variable(v): f"{RUNTIME_PYTHONS_DIR}/{v}/bin/python{v}" for v in runtime_pythons()}


def runtime_export_command(deployment: ModelDeployment) -> str:
    """The shell command the step runs in the image; `make artifacts` runs the same module in the local runtime venv."""
    target, build = deployment.target, deployment.spec.build
    source_args = f"--factory {build.factory}" if build.factory else f"--model {build.source}"
    if build.weights:
        source_args += f" --weights {build.weights}"
    shape = " ".join(str(n) for n in build.input_shape)
    return (f"PYTHONHASHSEED=0 python -m model_artifacts.runtime_export {source_args} --recipe {target.recipe} "
            f"--input-shape {shape} --dtype {build.input_dtype} --out {RUNTIME_EXPORT_DIR}/{deployment.name}")


def runtime_export_step(scope: Construct, source: pipelines.IFileSetProducer, runtime: str,
                        deployments: Sequence[ModelDeployment]) -> pipelines.CodeBuildStep:
    """TorchScript of every model served by `runtime`, from the runtime's torch in its image (`deployments` resolved in
    the pipeline's region), into one output: one Synth input per runtime, not per model, as CodePipeline allows a
    CodeBuild action 5 input artifacts. The image: the first of the models' images (a CPU one when the runtime has
    both; the same torch either way)."""
    image_uri = min(deployment.target.image_uri for deployment in deployments)
    registry, repository = image_registry_and_repository(image_uri)
    image_repository = ecr.Repository.from_repository_attributes(
        scope,
        f"RuntimeImage-{runtime}",
        repository_arn=Stack.of(scope).format_arn(service="ecr", account=registry, resource="repository", resource_name=repository),
        repository_name=repository,
    )
    return pipelines.CodeBuildStep(
        f"{RUNTIME_EXPORT_STEP_PREFIX}{runtime}",
        input=source,
        build_environment=codebuild.BuildEnvironment(
            build_image=codebuild.LinuxBuildImage.from_ecr_repository(image_repository, image_uri.rpartition(":")[2])
        ),
        commands=[runtime_export_command(deployment) for deployment in sorted(deployments, key=lambda d: d.name)],
        primary_output_directory=RUNTIME_EXPORT_DIR,
        timeout=Duration.minutes(30 + 2 * len(deployments)),
    )


def synth_step(source: pipelines.IFileSetProducer, config: AppConfig, runtime_exports: Dict[str, pipelines.CodeBuildStep]) -> pipelines.CodeBuildStep:
    step = pipelines.CodeBuildStep(
        "Synth",
        input=source,
        additional_inputs={f"{RUNTIME_EXPORT_PARTS_DIR}/{runtime}": step for runtime, step in runtime_exports.items()},
        build_environment=codebuild.BuildEnvironment(build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.LARGE),
        partial_build_spec=RUNTIMES,
        env={**account_environment(config), "PIP_EXTRA_INDEX_URL": TORCH_CPU_INDEX, **runtime_python_variables()},
        # make test builds every serving runtime's venv with its image's Python (runtimes/). The build image has
        # neither 3.6 nor 3.8, and 3.6 no longer compiles against its OpenSSL 3: conda-forge's builds are prebuilt.
        install_commands=[
            f"curl -fsSL {MICROMAMBA_URL} | tar -xj -C /usr/local bin/micromamba",
            *(f"micromamba create --yes --quiet --root-prefix {RUNTIME_PYTHONS_DIR}/.mamba --prefix {RUNTIME_PYTHONS_DIR}/{version} "
              f"--channel conda-forge python={version}" for version in runtime_pythons()),
        ],
        # What a developer runs: the whole suite, then artifacts (from the runtime exports) + synth + cfn-lint.
        commands=["make test", *([MERGE_RUNTIME_EXPORTS_COMMAND] if runtime_exports else []),
                  f"make synth RUNTIME_EXPORT={RUNTIME_EXPORT_DIR}", TEMPLATES_ONLY_COMMAND],
        primary_output_directory=ASSEMBLY_DIR,
        timeout=Duration.minutes(60),
    )
    # The second output: what the CloudFormation deploy actions read (pipeline_stack.deploy_from_templates_only).
    step.add_output_directory(TEMPLATES_ONLY_DIR)
    return step


def smoke_test_step(
    source: pipelines.IFileSetProducer, *, region: str, account: str, role_name: str, runner: iam.IRole,
    role_arn: CfnOutput, endpoints: Mapping[str, bool], async_endpoints: Collection[str] = (),
) -> pipelines.CodeBuildStep:
    """One action that checks every endpoint of the stage (`endpoints`: name -> is the SSD detector) with the example
    image, from the tools account, through the stage's role (`role_name`, which trusts only `runner`, the CodeBuild role
    this step runs as). One action, not one per model: CodePipeline allows 50 actions per stage. Each failure is named.
    `async_endpoints` (serving.profile: async) are called through S3 and polled (smoke_test/async_check.py)."""
    endpoint_args = " ".join(f"--{'async-' if name in async_endpoints else ''}{'detector-' if detector else ''}endpoint-name {name}"
                             for name, detector in sorted(endpoints.items()))
    # An async endpoint scaled to zero starts an instance before it answers: the step waits that long more, once
    # (the endpoints are checked concurrently).
    async_minutes = math.ceil(ASYNC_WAIT_SECONDS / 60) if set(async_endpoints) & set(endpoints) else 0
    return pipelines.CodeBuildStep(
        "SmokeTest",
        input=source,
        role=runner,
        build_environment=codebuild.BuildEnvironment(build_image=BUILD_IMAGE),
        partial_build_spec=RUNTIMES,
        env_from_cfn_outputs={"SMOKE_TEST_ROLE_ARN": role_arn},
        env={"ENDPOINT_REGION": region},
        install_commands=["python -m pip install --quiet -r smoke_test/requirements.txt"],
        commands=[f'python -m smoke_test --region "$ENDPOINT_REGION" --assume-role-arn "$SMOKE_TEST_ROLE_ARN" {endpoint_args}'],
        role_policy_statements=[
            iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[f"arn:{partition_of(region)}:iam::{account}:role/{role_name}"])
        ],
        timeout=Duration.minutes(15 + len(endpoints) // 8 + async_minutes),
    )
