"""Where moto 5.2.5's CloudFormation differs from CloudFormation for these templates, narrowly corrected for the
rehearsal (each is listed in its output). These change how moto creates a type it implements; none replaces it."""
import contextlib
import json
from typing import Iterator, List, Optional, Tuple
from unittest import mock


def _physical_names(stack: contextlib.ExitStack) -> List[Tuple[Optional[str], str]]:
    """SageMaker physical names: moto ignores EndpointName (and the config's and model's) and generates
    "<stack>-<logical id>-<suffix>", so the stable endpoint name clients and alarms use would not exist."""
    from moto.sagemaker import models

    done = []
    for cls, resource_type, name_property in ((models.FakeEndpoint, "AWS::SageMaker::Endpoint", "EndpointName"),
                                              (models.FakeEndpointConfig, "AWS::SageMaker::EndpointConfig", "EndpointConfigName"),
                                              (models.Model, "AWS::SageMaker::Model", "ModelName")):
        assert cls.cloudformation_type() == resource_type and cls.cloudformation_name_type() == "", (
            f"moto now names {resource_type} itself: drop this adjustment")
        stack.enter_context(mock.patch.object(cls, "cloudformation_name_type", staticmethod(lambda p=name_property: p)))
        done.append((resource_type, f"{resource_type}: physical name from {name_property} (moto generates one)"))
    return done


def _kms_key(stack: contextlib.ExitStack) -> List[Tuple[Optional[str], str]]:
    """AWS::KMS::Key: moto hands the CloudFormation properties to its KMS API as they are. Tags are
    CloudFormation's [{Key, Value}], the API wants [{TagKey, TagValue}] (KeyError 'TagKey'); KeyPolicy is a JSON
    object, the API wants a string (DescribeKey then fails on json.loads of a dict)."""
    from moto.kms.models import Key

    original = Key.create_from_cloudformation_json.__func__

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = cloudformation_json.get("Properties", {})
        tags = properties.get("Tags", [])
        properties = dict(properties)
        if tags and "Key" in tags[0]:
            properties["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in tags]
        if isinstance(properties.get("KeyPolicy"), dict):
            properties["KeyPolicy"] = json.dumps(properties["KeyPolicy"])
        cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    stack.enter_context(mock.patch.object(Key, "create_from_cloudformation_json", classmethod(create)))
    return [("AWS::KMS::Key", "AWS::KMS::Key: Tags as KMS's TagKey/TagValue and KeyPolicy as a JSON string "
                              "(moto passes CloudFormation's as they are)")]


def _layer_version_ref(stack: contextlib.ExitStack) -> List[Tuple[Optional[str], str]]:
    """AWS::Lambda::LayerVersion has no physical id in moto: a Ref to it resolves to moto's Python object (not
    the layer version ARN CloudFormation returns), which a function's Layers then carries."""
    from moto.awslambda.models import LayerVersion

    assert "physical_resource_id" not in vars(LayerVersion), "moto now gives LayerVersion a physical id: drop this adjustment"
    stack.enter_context(mock.patch.object(LayerVersion, "physical_resource_id", property(lambda self: self.arn), create=True))
    return [("AWS::Lambda::LayerVersion", "AWS::Lambda::LayerVersion: Ref is the layer version ARN (moto has no physical id for it)")]


def _removed_resources_forgotten(stack: contextlib.ExitStack) -> List[Tuple[Optional[str], str]]:
    """A stack update that removes a resource deletes it in its service but keeps moto's object for its logical
    id, so a later update that adds that logical id again (step 2 of the profile switch registers autoscaling
    again) gets the deleted object back instead of a new resource."""
    from moto.cloudformation.parsing import ResourceMap

    original = ResourceMap.update

    def update(self, template, parameters=None):
        removed = self.build_resource_diff(template, parameters)["Remove"]
        original(self, template, parameters)
        for logical_id in removed:
            self._parsed_resources.pop(logical_id, None)

    stack.enter_context(mock.patch.object(ResourceMap, "update", update))
    return [(None, "stack update: a removed resource is forgotten, so adding its logical id again creates it anew "
                   "(moto hands back the deleted one)")]


ADJUSTMENTS = (_physical_names, _kms_key, _layer_version_ref, _removed_resources_forgotten)


@contextlib.contextmanager
def moto_adjustments() -> Iterator[List[Tuple[Optional[str], str]]]:
    """Applies every adjustment; yields (the resource type it concerns or None for all, what it does)."""
    with contextlib.ExitStack() as stack:
        done: List[Tuple[Optional[str], str]] = []
        for adjustment in ADJUSTMENTS:
            done += adjustment(stack)
        yield done
