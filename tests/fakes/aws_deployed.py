"""Stand-ins for the two AWS services `mnistflow verify` calls that the emulator cannot answer
here, both held to botocore's model of the service.

- EKS: moto 5.2 serves clusters, node groups and Fargate profiles only (moto/eks/urls.py); it
  has no Pod Identity associations, access entries or add-ons. FakeEks keeps them in memory;
  every request is validated against the operation's input shape and every answer against its
  output shape in botocore/data/eks/2017-11-01/service-2.json, and a missing resource is the
  model's ResourceNotFoundException.
- Lambda: moto runs a function's code in Docker. FakeLambda invokes a handler in this process,
  as Lambda's RequestResponse does, and answers with Invoke's output shape
  (botocore/data/lambda/2015-03-31/service-2.json: StatusCode, FunctionError, Payload).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.exceptions import ClientError, ParamValidationError
from botocore.response import StreamingBody
from botocore.validate import ParamValidator


class _Modelled:
    service: str

    def __init__(self) -> None:
        self._model = botocore.session.get_session().get_service_model(self.service)

    def _answer(self, operation: str, params: dict[str, Any], answer: dict[str, Any]) -> dict:
        model = self._model.operation_model(operation)
        for shape, value in ((model.input_shape, params), (model.output_shape, answer)):
            report = ParamValidator().validate(value, shape)
            if report.has_errors():
                raise ParamValidationError(report=report.generate_report())
        return answer

    def _error(self, operation: str, code: str, message: str, status: int) -> ClientError:
        model = self._model.operation_model(operation)
        assert code in [e.name for e in model.error_shapes], (operation, code)
        return ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            operation,
        )


class FakeEks(_Modelled):
    service = "eks"

    def __init__(self, account: str, region: str) -> None:
        super().__init__()
        self._account, self._region = account, region
        self.clusters: dict[str, str] = {}  # name -> authentication mode
        self.associations: list[dict[str, str]] = []
        self.access_entries: dict[tuple[str, str], list[str]] = {}
        self.addons: set[tuple[str, str]] = set()

    def _cluster(self, operation: str, name: str) -> None:
        if name not in self.clusters:
            raise self._error(
                operation, "ResourceNotFoundException", f"No cluster found for name: {name}.", 404
            )

    def describe_cluster(self, **params: Any) -> dict:
        self._cluster("DescribeCluster", params["name"])
        cluster = {
            "name": params["name"],
            "accessConfig": {"authenticationMode": self.clusters[params["name"]]},
        }
        return self._answer("DescribeCluster", params, {"cluster": cluster})

    def list_pod_identity_associations(self, **params: Any) -> dict:
        self._cluster("ListPodIdentityAssociations", params["clusterName"])
        found = [
            {
                k: a[k]
                for k in (
                    "clusterName",
                    "namespace",
                    "serviceAccount",
                    "associationArn",
                    "associationId",
                )
            }
            for a in self.associations
            if a["clusterName"] == params["clusterName"]
            and a["namespace"] == params.get("namespace", a["namespace"])
            and a["serviceAccount"] == params.get("serviceAccount", a["serviceAccount"])
        ]
        return self._answer("ListPodIdentityAssociations", params, {"associations": found})

    def describe_pod_identity_association(self, **params: Any) -> dict:
        for association in self.associations:
            if association["associationId"] == params["associationId"]:
                return self._answer(
                    "DescribePodIdentityAssociation", params, {"association": dict(association)}
                )
        raise self._error(
            "DescribePodIdentityAssociation", "ResourceNotFoundException", "not found", 404
        )

    def describe_access_entry(self, **params: Any) -> dict:
        key = (params["clusterName"], params["principalArn"])
        if key not in self.access_entries:
            raise self._error(
                "DescribeAccessEntry",
                "ResourceNotFoundException",
                f"The specified principalArn could not be found: {params['principalArn']}",
                404,
            )
        entry = {
            "clusterName": key[0],
            "principalArn": key[1],
            "kubernetesGroups": list(self.access_entries[key]),
            "type": "STANDARD",
        }
        return self._answer("DescribeAccessEntry", params, {"accessEntry": entry})

    def describe_addon(self, **params: Any) -> dict:
        key = (params["clusterName"], params["addonName"])
        if key not in self.addons:
            raise self._error(
                "DescribeAddon", "ResourceNotFoundException", f"No addon: {key[1]}", 404
            )
        addon = {"addonName": key[1], "clusterName": key[0], "status": "ACTIVE"}
        return self._answer("DescribeAddon", params, {"addon": addon})

    # -- setting it up, as the stack and the cluster's admin would ---------------------------

    def add_cluster(self, name: str, authentication_mode: str = "API_AND_CONFIG_MAP") -> None:
        self.clusters[name] = authentication_mode
        self.addons.add((name, "eks-pod-identity-agent"))

    def associate(self, cluster: str, namespace: str, service_account: str, role_arn: str) -> None:
        association_id = f"a-{uuid.uuid4().hex[:17]}"
        arn = (
            f"arn:aws:eks:{self._region}:{self._account}:podidentityassociation/"
            f"{cluster}/{association_id}"
        )
        self.associations.append(
            {
                "clusterName": cluster,
                "namespace": namespace,
                "serviceAccount": service_account,
                "roleArn": role_arn,
                "associationArn": arn,
                "associationId": association_id,
            }
        )


class FakeLambda(_Modelled):
    service = "lambda"

    def __init__(self, handlers: dict[str, Callable[[Any, Any], Any]]) -> None:
        super().__init__()
        self.handlers = handlers
        self.events: list[tuple[str, Any]] = []

    def invoke(self, **params: Any) -> dict:
        name = params["FunctionName"]
        if name not in self.handlers:
            raise self._error(
                "Invoke", "ResourceNotFoundException", f"Function not found: {name}", 404
            )
        event = json.loads(params["Payload"])
        self.events.append((name, event))
        answer: dict[str, Any] = {"StatusCode": 200}
        from mnistflow.local.stack import LambdaContext  # the local stack's, as its functions get

        try:
            result = self.handlers[name](event, LambdaContext(function_name=name))
        except Exception as error:  # noqa: BLE001 - Lambda reports a function error so
            result = {"errorType": type(error).__name__, "errorMessage": str(error)}
            answer["FunctionError"] = "Unhandled"
        body = json.dumps(result).encode()
        self._answer("Invoke", params, {**answer, "Payload": body})
        return {**answer, "Payload": StreamingBody(io.BytesIO(body), len(body))}
