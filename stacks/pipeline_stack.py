"""The delivery pipeline (CDK Pipelines), in the tools account: one commit, dev → staging → prod.

Source (CodeConnections) → RuntimeExport per serving runtime (its image's own torch) → Synth (make test,
make synth) → UpdatePipeline (self-mutation) → assets →
Dev → Staging (+ smoke test of every endpoint) → manual approval → Prod (+ smoke test). The stages are the very
ServingStage objects app.py synthesizes for hand deployment.

Big models: CDK Pipelines gives its CloudFormation deploy actions the whole synth output (cdk.out, the staged
model.tar.gz files included) as input artifact, and CodePipeline caps those at 256 MB (aws-cdk issues #9917,
#21325). The synth step also outputs a copy of the assembly without the staged assets (pipeline_steps), and
`deploy_from_templates_only` (pipeline_deploy_input) points the deploy actions at it; the Assets stage and self-mutation keep the full
output. So models deploy through the pipeline up to the 5 GiB a single CopyObject copies.
"""
from collections import defaultdict
from typing import Dict, List

from aws_cdk import Stack, pipelines
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from constructs import Construct

from config import AppConfig, EnvironmentConfig, ModelDeployment
from stacks.constructs.pipeline_acknowledgments import acknowledge_pipeline_findings
from config.loader import resolve_in_region
from config.shadow import with_shadow
from stacks.pipeline_deploy_input import deploy_from_templates_only
from stacks.pipeline_steps import cdk_cli_version, runtime_export_step, smoke_test_step, synth_step
from runtimes import runtime_for
from stacks.serving_stage import ServingStage


class PipelineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, stages: Dict[str, ServingStage], **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        spec = config.pipeline
        source = pipelines.CodePipelineSource.connection(spec.repository, spec.branch, connection_arn=spec.connection_arn)
        runtime_exports = {
            runtime: runtime_export_step(self, source, runtime, deployments)
            for runtime, deployments in _torchscript_models_by_runtime(config, spec.region).items()
        }
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            synth=synth_step(source, config, runtime_exports),
            pipeline_type=codepipeline.PipelineType.V2,
            cross_account_keys=True,  # the stages live in other accounts
            enable_key_rotation=True,
            self_mutation=True,
            cli_version=cdk_cli_version(),
        )
        for env in config.environments:
            stage = stages[env.name]
            pre = [pipelines.ManualApprovalStep(f"Approve{stage.stage_name}", comment=f"Promote to {env.name}?")] \
                if env.name in spec.manual_approval_before else []
            post = []
            if env.name in spec.smoke_test_after and env.models:
                post = [
                    smoke_test_step(
                        source,
                        region=env.region,
                        account=env.account,
                        role_name=env.smoke_test_role_name,
                        runner=self._smoke_test_runner(env),
                        role_arn=stage.smoke_test_role.output,
                        # The SSD detector answers detections, not classes.
                        endpoints={env.endpoint_name(m.name): m.spec.framework == "mxnet" for m in env.models},
                        # serving.profile: async: called through S3 and polled (smoke_test/async_check.py).
                        async_endpoints={env.endpoint_name(m.name) for m in env.models if m.target.is_async},
                    )
                ]
            self.pipeline.add_stage(stage, pre=pre, post=post)
        # Build now, so the CodePipeline and CodeBuild constructs exist to carry their cdk-nag acknowledgements.
        self.pipeline.build_pipeline()
        deploy_from_templates_only(self.pipeline)
        acknowledge_pipeline_findings(self.pipeline)

    def _smoke_test_runner(self, env: EnvironmentConfig) -> iam.Role:
        """The CodeBuild role of a stage's smoke tests, named: the stage's smoke-test role trusts this name only.
        A child of the pipeline, so the pipeline's cdk-nag acknowledgements (CodeBuild's own grants) cover it."""
        role = iam.Role(
            self.pipeline,
            f"SmokeTestRunner{env.stage_id}",
            role_name=env.pipeline_smoke_test_role_name,
            assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
            description=f"Runs the smoke test of {env.stage_id} (its endpoints' role trusts this one only)",
        )
        # Named, so pinned: a new logical id would recreate it under the same, still taken, name.
        role.node.default_child.override_logical_id(f"SmokeTestRunner{env.stage_id}")
        return role


def _torchscript_models_by_runtime(config: AppConfig, region: str) -> Dict[str, List[ModelDeployment]]:
    """The PyTorch models, resolved in the pipeline's region, by the runtime that converts them (the MXNet detector is
    exported with GluonCV in the synth step)."""
    by_runtime = defaultdict(list)
    for name, model in config.models.items():
        if model.framework == "pytorch":
            # serving.shadow: the shadow's artifact (<name>.shadow) is exported by its own profile's runtime too.
            for deployment in with_shadow(resolve_in_region(name, model, region), region):
                target = deployment.target
                by_runtime[runtime_for(target.framework, target.framework_version, target.profile, where=f"model {name!r}").name].append(deployment)
    return dict(sorted(by_runtime.items()))

