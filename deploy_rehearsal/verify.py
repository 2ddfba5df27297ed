"""After each stack operation: every resource of the template has a physical id (nothing skipped), and each one
whose type the rehearsal knows is asked for in its emulated service, through the service's API, with the
references between them followed (endpoint -> config -> model -> role, model data -> staged asset, alarm and
scalable target -> endpoint, custom resource -> its Lambda function)."""
import json
from collections import Counter
from typing import Callable, Dict, Optional


class VerificationFailed(AssertionError):
    pass


def _name(arn_or_name: str) -> str:
    return arn_or_name.split("/")[-1]


class _Stack:
    """One deployed stack as the checks see it: physical ids by logical id, and references resolved."""

    def __init__(self, rehearsal, stack, template):
        self.rehearsal, self.stack, self.template = rehearsal, stack, template
        cfn = rehearsal.client("cloudformation", stack.account, stack.region)
        summaries = cfn.list_stack_resources(StackName=stack.stack_name)["StackResourceSummaries"]
        self.physical = {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries if s["LogicalResourceId"]}
        self.stubs = {entry["logical_id"]: entry["stub"] for entry in rehearsal.stand_ins.record.stubs
                      if entry["account"] == stack.account and entry["stub"].stack_name == stack.stack_name}

    def client(self, service: str):
        return self.rehearsal.client(service, self.stack.account, self.stack.region)

    def ref(self, value):
        """A literal, or a Ref/GetAtt-Arn to a resource of this stack, as its physical id; else None."""
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and "Ref" in value:
            return self.physical.get(value["Ref"])
        return None

    def fail(self, logical_id: str, message: str):
        raise VerificationFailed(f"{self.stack.stack_name}/{logical_id}: {message}")


# ------------------------------------------------------------------ per type; each returns nothing or fails


def _bucket(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    s3 = s.client("s3")
    s3.head_bucket(Bucket=physical_id)
    if "BucketEncryption" in properties:
        rules = s3.get_bucket_encryption(Bucket=physical_id)["ServerSideEncryptionConfiguration"]["Rules"]
        default = rules[0]["ApplyServerSideEncryptionByDefault"]
        wanted = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
        if default["SSEAlgorithm"] != wanted["SSEAlgorithm"]:
            s.fail(logical_id, f"encryption {default['SSEAlgorithm']}, template says {wanted['SSEAlgorithm']}")
        if default.get("KMSMasterKeyID"):
            s.client("kms").describe_key(KeyId=default["KMSMasterKeyID"])  # the key it names exists


def _key(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    kms = s.client("kms")
    if not kms.describe_key(KeyId=physical_id)["KeyMetadata"]["Enabled"]:
        s.fail(logical_id, "key is disabled")
    if properties.get("EnableKeyRotation") and not kms.get_key_rotation_status(KeyId=physical_id)["KeyRotationEnabled"]:
        s.fail(logical_id, "rotation is off, the template turns it on")


def _alias(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    aliases = {a["AliasName"] for a in s.client("kms").list_aliases()["Aliases"]}
    if properties["AliasName"] not in aliases:
        s.fail(logical_id, f"alias {properties['AliasName']} not found")


def _role(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    s.client("iam").get_role(RoleName=physical_id)


def _inline_policy(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    iam = s.client("iam")
    for role in properties.get("Roles", []):
        role_name = s.ref(role)
        if role_name and properties["PolicyName"] not in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
            s.fail(logical_id, f"policy {properties['PolicyName']} is not on role {role_name}")


def _staged(s: _Stack, logical_id: str, bucket: str, key: str) -> None:
    try:
        s.client("s3").head_object(Bucket=bucket, Key=key)
    except Exception:
        s.fail(logical_id, f"s3://{bucket}/{key} was not staged")


def _function(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    s.client("lambda").get_function(FunctionName=physical_id)  # moto's CloudFormation drops Layers: not compared
    code = properties.get("Code", {})
    if isinstance(code.get("S3Bucket"), str) and isinstance(code.get("S3Key"), str):
        _staged(s, logical_id, code["S3Bucket"], code["S3Key"])


def _layer(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    *_, name, version = physical_id.split(":")  # arn:aws:lambda:<region>:<account>:layer:<name>:<version>
    s.client("lambda").get_layer_version(LayerName=name, VersionNumber=int(version))
    content = properties.get("Content", {})
    if isinstance(content.get("S3Bucket"), str) and isinstance(content.get("S3Key"), str):
        _staged(s, logical_id, content["S3Bucket"], content["S3Key"])


def _deliveries(stub):
    """The S3 copies a stubbed custom resource stands for: (source bucket, source key, member of the source zip or
    None, destination bucket, destination key or key prefix). Two shapes: CDK's BucketDeployment (unzips staged
    assets under a prefix) and an AwsCustomResource whose call is S3 copyObject (copies one staged object)."""
    p = stub.properties
    if stub.resource_type == "Custom::CDKBucketDeployment":
        for bucket, key in zip(p.get("SourceBucketNames", []), p.get("SourceObjectKeys", [])):
            yield bucket, key, "zip", p.get("DestinationBucketName"), p.get("DestinationBucketKeyPrefix", "")
    for phase in ("Update", "Create"):
        if isinstance(p.get(phase), str):
            call = json.loads(p[phase])
            if (call.get("service"), call.get("action")) in {("S3", "copyObject"), ("@aws-sdk/client-s3", "CopyObjectCommand")}:
                parameters = call["parameters"]
                source_bucket, _, source_key = parameters["CopySource"].lstrip("/").partition("/")
                yield source_bucket, source_key, None, parameters["Bucket"], parameters["Key"]
            break


def _delivered(s: _Stack, logical_id: str, url: str) -> None:
    """Model data is in S3, or a stubbed custom resource of this stack copies it there from a staged asset that
    holds exactly that file."""
    import io
    import zipfile

    bucket, _, key = url[len("s3://"):].partition("/")
    s3 = s.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return
    except Exception:
        pass
    for stub in s.stubs.values():
        for source_bucket, source_key, packaging, destination_bucket, destination in _deliveries(stub):
            if destination_bucket != bucket:
                continue
            if packaging is None and destination == key:
                _staged(s, logical_id, source_bucket, source_key)
                return
            if packaging == "zip" and key.startswith(destination):
                body = s3.get_object(Bucket=source_bucket, Key=source_key)["Body"].read()
                if key[len(destination):] in zipfile.ZipFile(io.BytesIO(body)).namelist():
                    return
    s.fail(logical_id, f"{url}: not in S3 and no custom resource of this stack copies it there from a staged asset")


def _model(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    model = s.client("sagemaker").describe_model(ModelName=_name(physical_id))
    s.client("iam").get_role(RoleName=_name(model["ExecutionRoleArn"]))
    for container in [model.get("PrimaryContainer")] + model.get("Containers", []):
        if container and container.get("ModelDataUrl"):
            _delivered(s, logical_id, container["ModelDataUrl"])


def _endpoint_config(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    sagemaker = s.client("sagemaker")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=_name(physical_id))
    for variant in config["ProductionVariants"]:
        sagemaker.describe_model(ModelName=variant["ModelName"])
    if config.get("KmsKeyId"):
        s.client("kms").describe_key(KeyId=config["KmsKeyId"])


def _endpoint(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    sagemaker = s.client("sagemaker")
    name = properties.get("EndpointName") if isinstance(properties.get("EndpointName"), str) else _name(physical_id)
    endpoint = sagemaker.describe_endpoint(EndpointName=name)
    if endpoint["EndpointStatus"] != "InService":
        s.fail(logical_id, f"endpoint {name} is {endpoint['EndpointStatus']}")
    sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])


def _dashboard(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    s.client("cloudwatch").get_dashboard(DashboardName=properties.get("DashboardName") or physical_id)


def _scalable_target(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    resource_id, dimension, namespace = physical_id.split("|")
    targets = s.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace=namespace, ResourceIds=[resource_id], ScalableDimension=dimension)["ScalableTargets"]
    if len(targets) != 1 or (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]) != (properties["MinCapacity"], properties["MaxCapacity"]):
        s.fail(logical_id, f"scalable target {resource_id}: {targets}")


def _scaling_policy(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    policies = s.client("application-autoscaling").describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    if physical_id not in {p["PolicyARN"] for p in policies}:
        s.fail(logical_id, f"scaling policy {physical_id} not found")


def _alarm(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    alarms = s.client("cloudwatch").describe_alarms(AlarmNames=[physical_id])["MetricAlarms"]
    if len(alarms) != 1:
        s.fail(logical_id, f"alarm {physical_id} not found")
    dimensions = {d["Name"]: d["Value"] for d in alarms[0].get("Dimensions", [])}
    if alarms[0].get("Namespace") == "AWS/SageMaker" and "EndpointName" in dimensions:
        s.client("sagemaker").describe_endpoint(EndpointName=dimensions["EndpointName"])  # it watches a real endpoint


def _bucket_policy(s: _Stack, logical_id: str, properties: dict, physical_id: str) -> None:
    s.client("s3").get_bucket_policy(Bucket=s.ref(properties["Bucket"]) or physical_id)


CHECKS: Dict[str, Callable] = {
    "AWS::S3::Bucket": _bucket,
    "AWS::KMS::Key": _key,
    "AWS::KMS::Alias": _alias,
    "AWS::IAM::Role": _role,
    "AWS::IAM::Policy": _inline_policy,
    "AWS::Lambda::Function": _function,
    "AWS::Lambda::LayerVersion": _layer,
    "AWS::SageMaker::Model": _model,
    "AWS::SageMaker::EndpointConfig": _endpoint_config,
    "AWS::SageMaker::Endpoint": _endpoint,
    "AWS::CloudWatch::Dashboard": _dashboard,
    "AWS::ApplicationAutoScaling::ScalableTarget": _scalable_target,
    "AWS::ApplicationAutoScaling::ScalingPolicy": _scaling_policy,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::S3::BucketPolicy": _bucket_policy,
}


def _stub_inputs(s: _Stack, logical_id: str, stub) -> bool:
    """A stub's inputs that name other resources must exist: its Lambda (ServiceToken), buckets and objects."""
    p = stub.properties
    checked = False
    if isinstance(p.get("ServiceToken"), str):
        s.client("lambda").get_function(FunctionName=p["ServiceToken"])
        checked = True
    for source_bucket, source_key, _, destination_bucket, _ in _deliveries(stub):
        _staged(s, logical_id, source_bucket, source_key)
        s.client("s3").head_bucket(Bucket=destination_bucket)
        checked = True
    if stub.resource_type == "Custom::S3AutoDeleteObjects":
        s.client("s3").head_bucket(Bucket=p["BucketName"])
        checked = True
    return checked


class Verifier:
    def __init__(self, rehearsal):
        self.rehearsal = rehearsal

    def check_stack(self, stack, template: dict, previous: Optional[dict]) -> Counter:
        """Fails on a resource without a physical id, or one its service does not know. Returns the types checked."""
        s = _Stack(self.rehearsal, stack, template)
        checked: Counter = Counter()
        for logical_id, resource in template.get("Resources", {}).items():
            if "Condition" in resource:
                continue  # conditions are moto's to evaluate; the templates here have none
            physical_id = s.physical.get(logical_id)
            if not physical_id:
                s.fail(logical_id, f"{resource['Type']} has no physical id: the emulation skipped it")
            check = CHECKS.get(resource["Type"])
            if check:
                try:
                    check(s, logical_id, resource.get("Properties", {}), physical_id)
                except VerificationFailed:
                    raise
                except Exception as error:
                    s.fail(logical_id, f"{resource['Type']} {physical_id}: {error}")
                checked[resource["Type"]] += 1
            elif logical_id in s.stubs and _stub_inputs(s, logical_id, s.stubs[logical_id]):
                checked[resource["Type"]] += 1
        return checked
