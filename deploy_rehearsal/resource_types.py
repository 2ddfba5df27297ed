"""Which resource types moto's CloudFormation creates, which the rehearsal bridges onto moto's own service
APIs, and which it stubs; and the guard that a bridge or a stub never stands in for a type moto implements.

moto 5.2.5 skips a type it does not know with a log line and a warning, and drops every property that refers to
the skipped resource: a template could "deploy" with half its wiring silently gone. So the rehearsal never lets
moto skip: every type in the templates is one of

- emulated: in moto's own registry (`moto.cloudformation.parsing.get_model_map()`), created by moto in its
  service backends (S3, IAM, KMS, Lambda, SageMaker, CloudWatch dashboards, ...);
- bridged: a type moto's CloudFormation lacks but whose service moto emulates; the bridge calls that service's
  moto backend (register the scalable target, put the alarm, put the bucket policy), so the resource exists in
  the emulated service and can be checked there;
- stubbed: anything else (custom resources, which moto would run as Lambda functions in Docker; CDK metadata;
  CodeBuild and CodePipeline): the stub takes an id and answers Ref/GetAtt, nothing else, and is listed.
"""
import json
import re
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional

_TYPE_NAME = re.compile(r"^[A-Za-z0-9]+::[A-Za-z0-9]+::[A-Za-z0-9]+$")
# Not real types: moto's registry holds its custom-resource class as "?" and its base class's placeholder.
_NOT_TYPES = {"?", "AWS::SERVICE::RESOURCE"}


class StubGuardError(AssertionError):
    """A stub or a bridge would hide a type moto implements."""


def moto_implemented_types() -> FrozenSet[str]:
    """The resource types moto's CloudFormation creates, from moto's own registry (not a hand list)."""
    from moto.cloudformation import parsing

    return frozenset(t for t in parsing.get_model_map() if _TYPE_NAME.match(t) and t not in _NOT_TYPES) - set(parsing.NULL_MODELS)


def template_types(templates: Iterable[dict]) -> FrozenSet[str]:
    return frozenset(resource["Type"] for template in templates for resource in template.get("Resources", {}).values())


def check_stand_ins(stubbed: Iterable[str], bridged: Iterable[str], implemented: FrozenSet[str]) -> None:
    """Refuse a stub or a bridge for a type moto implements: it would replace moto's emulation with ours."""
    hidden = sorted((set(stubbed) | set(bridged)) & implemented)
    if hidden:
        raise StubGuardError(f"would stand in for types moto's CloudFormation implements: {', '.join(hidden)}")
    both = sorted(set(stubbed) & set(bridged))
    if both:
        raise StubGuardError(f"both stubbed and bridged: {', '.join(both)}")


class Record:
    """What the stand-ins did, per account: the resolved properties each stub and bridge received."""

    def __init__(self) -> None:
        self.stubs: List[dict] = []
        self.bridged: List[dict] = []


class _StandIn:
    """The part of moto's CloudFormationModel interface that its parser calls, without registering in its
    registry (subclassing CloudFormationModel would add the class to moto's model map)."""

    record: Record
    resource_type: str

    def __init__(self, logical_id: str, physical_id: str, properties: dict, account_id: str, region_name: str):
        self.logical_id = logical_id
        self.physical_id = physical_id
        self.properties = properties
        self.account_id = account_id
        self.region_name = region_name

    @property
    def physical_resource_id(self) -> str:
        return self.physical_id

    def is_created(self) -> bool:
        return True

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return True

    def get_cfn_attribute(self, attribute: str) -> Any:
        """A placeholder; ARN-shaped for *Arn attributes (IAM refuses a policy Resource that is not an ARN)."""
        if attribute.endswith("Arn"):
            service = self.resource_type.split("::")[1].lower() if self.resource_type.startswith("AWS::") else "cloudformation"
            return f"arn:aws:{service}:{self.region_name}:{self.account_id}:stub/{self.physical_id}"
        return f"{self.physical_id}.{attribute}"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        resource = cls(kwargs["LogicalId"], resource_name, cloudformation_json.get("Properties", {}), account_id, region_name)
        resource.stack_name = kwargs["StackId"].split("/")[1]  # arn:aws:cloudformation:<region>:<account>:stack/<name>/<id>
        resource.create()
        return resource

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        properties = cloudformation_json.get("Properties", {})
        original_resource.update(properties)
        original_resource.properties = properties
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        return None

    def delete(self, account_id: str, region_name: str) -> None:
        self.remove()

    def create(self) -> None:
        pass

    def update(self, properties: dict) -> None:
        pass

    def remove(self) -> None:
        pass


class _Stub(_StandIn):
    def create(self) -> None:
        self.record.stubs.append({"type": self.resource_type, "logical_id": self.logical_id, "account": self.account_id,
                                  "properties": self.properties, "stub": self})


# ------------------------------------------------------------------ bridges onto moto's service backends


class _Bridge(_StandIn):
    def create(self) -> None:
        self.apply(self.properties)
        self.record.bridged.append({"type": self.resource_type, "logical_id": self.logical_id, "account": self.account_id,
                                    "physical_id": self.physical_id})

    def update(self, properties: dict) -> None:
        self.apply(properties, previous=self.properties)

    def apply(self, properties: dict, previous: Optional[dict] = None) -> None:
        raise NotImplementedError


def _sagemaker_variant_exists(account_id: str, region_name: str, resource_id: str) -> None:
    """Application Auto Scaling refuses a target whose endpoint variant does not exist; moto does not check."""
    from moto.applicationautoscaling.exceptions import AWSValidationException
    from moto.sagemaker.models import sagemaker_backends

    match = re.match(r"^endpoint/(?P<endpoint>[^/]+)/variant/(?P<variant>[^/]+)$", resource_id)
    endpoints = sagemaker_backends[account_id][region_name].endpoints
    endpoint = endpoints.get(match.group("endpoint")) if match else None
    variants = [v["VariantName"] for v in endpoint.production_variants] if endpoint else []
    if not match or match.group("variant") not in variants:
        raise AWSValidationException(f"Scalable target {resource_id}: no such SageMaker endpoint variant "
                                     f"(endpoints: {sorted(endpoints)})")


class _ScalableTarget(_Bridge):
    """AWS::ApplicationAutoScaling::ScalableTarget: Ref is "resourceId|dimension|namespace", as CloudFormation's."""

    def __init__(self, logical_id, physical_id, properties, account_id, region_name):
        super().__init__(logical_id, physical_id, properties, account_id, region_name)
        self.physical_id = "|".join((properties["ResourceId"], properties["ScalableDimension"], properties["ServiceNamespace"]))

    def _backend(self):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        return applicationautoscaling_backends[self.account_id][self.region_name]

    def apply(self, properties, previous=None):
        if properties["ServiceNamespace"] == "sagemaker":
            _sagemaker_variant_exists(self.account_id, self.region_name, properties["ResourceId"])
        if previous and (previous["ResourceId"], previous["ScalableDimension"]) != (properties["ResourceId"], properties["ScalableDimension"]):
            self.remove(previous)
        self._backend().register_scalable_target(
            properties["ServiceNamespace"], properties["ResourceId"], properties["ScalableDimension"],
            int(properties["MinCapacity"]), int(properties["MaxCapacity"]), properties.get("RoleARN"),
            properties.get("SuspendedState"))
        self.physical_id = "|".join((properties["ResourceId"], properties["ScalableDimension"], properties["ServiceNamespace"]))

    def remove(self, properties=None):
        """Deregister, and delete the target's policies with it, as Application Auto Scaling does (moto keeps them)."""
        properties = properties or self.properties
        backend = self._backend()
        backend.deregister_scalable_target(properties["ServiceNamespace"], properties["ResourceId"], properties["ScalableDimension"])
        for policy in [p for p in backend.policies.values()
                       if (p.resource_id, p.scalable_dimension) == (properties["ResourceId"], properties["ScalableDimension"])]:
            backend.delete_scaling_policy(policy.policy_name, policy.service_namespace, policy.resource_id, policy.scalable_dimension)


class _ScalingPolicy(_Bridge):
    """AWS::ApplicationAutoScaling::ScalingPolicy on a target given by ScalingTargetId (the target's Ref)."""

    def _backend(self):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        return applicationautoscaling_backends[self.account_id][self.region_name]

    @staticmethod
    def _target(properties):
        if "ScalingTargetId" in properties:
            resource_id, dimension, namespace = properties["ScalingTargetId"].split("|")
            return namespace, resource_id, dimension
        return properties["ServiceNamespace"], properties["ResourceId"], properties["ScalableDimension"]

    def apply(self, properties, previous=None):
        from moto.applicationautoscaling.exceptions import AWSValidationException

        namespace, resource_id, dimension = self._target(properties)
        if resource_id not in self._backend().targets.get(dimension, {}):
            raise AWSValidationException(f"No scalable target registered for {namespace} {resource_id} {dimension}")
        if previous and (self._target(previous), previous["PolicyName"]) != ((namespace, resource_id, dimension), properties["PolicyName"]):
            self.remove(previous)
        body = properties.get("TargetTrackingScalingPolicyConfiguration") or properties.get("StepScalingPolicyConfiguration")
        policy = self._backend().put_scaling_policy(properties["PolicyName"], namespace, resource_id, dimension, body,
                                                    properties["PolicyType"])
        self.physical_id = policy.policy_arn

    def remove(self, properties=None):
        from moto.applicationautoscaling.exceptions import AWSValidationException

        properties = properties or self.properties
        namespace, resource_id, dimension = self._target(properties)
        try:
            self._backend().delete_scaling_policy(properties["PolicyName"], namespace, resource_id, dimension)
        except AWSValidationException:
            pass  # deregistering its target deleted it, as Application Auto Scaling does


class _Alarm(_Bridge):
    """AWS::CloudWatch::Alarm: Ref is the alarm's name (AlarmName, or a generated one)."""

    def _backend(self):
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[self.account_id][self.region_name]

    def apply(self, properties, previous=None):
        name = properties.get("AlarmName") or self.physical_id
        if previous and name != self.physical_id:
            self.remove()
        self._backend().put_metric_alarm(
            name=name,
            namespace=properties.get("Namespace"),
            metric_name=properties.get("MetricName"),
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            period=int(properties["Period"]) if "Period" in properties else None,
            threshold=float(properties["Threshold"]) if "Threshold" in properties else None,
            statistic=properties.get("Statistic"),
            extended_statistic=properties.get("ExtendedStatistic"),
            description=properties.get("AlarmDescription"),
            dimensions=properties.get("Dimensions", []),
            alarm_actions=properties.get("AlarmActions", []),
            ok_actions=properties.get("OKActions", []),
            insufficient_data_actions=properties.get("InsufficientDataActions", []),
            datapoints_to_alarm=properties.get("DatapointsToAlarm"),
            treat_missing_data=properties.get("TreatMissingData"),
            actions_enabled=properties.get("ActionsEnabled", True),
            tags=properties.get("Tags", []),
        )
        self.physical_id = name

    def get_cfn_attribute(self, attribute):
        if attribute == "Arn":
            return f"arn:aws:cloudwatch:{self.region_name}:{self.account_id}:alarm:{self.physical_id}"
        return super().get_cfn_attribute(attribute)

    def remove(self):
        self._backend().delete_alarms([self.physical_id])


class _BucketPolicy(_Bridge):
    """AWS::S3::BucketPolicy: the bucket must exist (moto's put_bucket_policy raises NoSuchBucket otherwise)."""

    def _backend(self):
        from moto.s3.models import s3_backends

        return s3_backends[self.account_id]["aws"]

    def apply(self, properties, previous=None):
        if previous and previous["Bucket"] != properties["Bucket"]:
            self.remove(previous)
        self._backend().put_bucket_policy(properties["Bucket"], json.dumps(properties["PolicyDocument"]).encode())

    def remove(self, properties=None):
        self._backend().delete_bucket_policy((properties or self.properties)["Bucket"])


BRIDGES: Dict[str, type] = {
    "AWS::ApplicationAutoScaling::ScalableTarget": _ScalableTarget,
    "AWS::ApplicationAutoScaling::ScalingPolicy": _ScalingPolicy,
    "AWS::CloudWatch::Alarm": _Alarm,
    "AWS::S3::BucketPolicy": _BucketPolicy,
}


class StandIns:
    """The stand-in classes of one rehearsal: `resolve(type)` is what moto's parser looks types up with."""

    def __init__(self, types_in_templates: Iterable[str], implemented: Optional[FrozenSet[str]] = None):
        self.implemented = implemented if implemented is not None else moto_implemented_types()
        present = set(types_in_templates)
        self.emulated = sorted(present & self.implemented)
        self.bridged = sorted((present & set(BRIDGES)) - self.implemented)
        self.stubbed = sorted(present - self.implemented - set(self.bridged))
        check_stand_ins(self.stubbed, self.bridged, self.implemented)
        self.record = Record()
        self.classes: Dict[str, type] = {}
        for resource_type in self.bridged:
            self.classes[resource_type] = type(BRIDGES[resource_type].__name__, (BRIDGES[resource_type],),
                                               {"record": self.record, "resource_type": resource_type})
        for resource_type in self.stubbed:
            self.classes[resource_type] = type("Stub", (_Stub,), {"record": self.record, "resource_type": resource_type})

    def lookup(self, moto_lookup: Callable[[str], Any]) -> Callable[[str], Any]:
        """moto's resource_class_from_type, with this rehearsal's stand-ins for exactly their types."""

        def resource_class_from_type(resource_type: str):
            if resource_type in self.classes:
                return self.classes[resource_type]
            cls = moto_lookup(resource_type)
            if cls is None:  # a type that was not in the templates given at the start: never skip silently
                raise StubGuardError(f"{resource_type}: not implemented by moto and not classified by the rehearsal")
            return cls

        return resource_class_from_type
