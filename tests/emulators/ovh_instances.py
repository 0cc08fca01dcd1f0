"""OVHcloud emulator: the instance and operation routes (create, poll the operation, list, get,
delete), mixed into ``OvhEmulator`` (its docstring describes the behaviour)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route

if TYPE_CHECKING:
    from tests.emulators.ovh import OvhEmulator as _Base
else:
    _Base = object


class OvhInstancesMixin(_Base):
    """``/instance`` and ``/operation`` routes of ``OvhEmulator``."""

    @route("POST", "/1.0/cloud/project/{serviceName}/region/{regionName}/instance")
    def create_instance(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        region = request.params["regionName"]
        body = request.json()
        flavor = next(
            (f for f in self.flavors if f["id"] == body["flavor"]["id"] and f["region"] == region),
            None,
        )
        if flavor is None:
            return self.error(400, "", f"Flavor {body['flavor']['id']} does not exist in {region}")
        if flavor["name"] in self.unavailable:
            return self.error(
                400, "", f"Flavor {flavor['name']} is not available in region {region}"
            )
        if len(self.instances) >= self.max_instances:
            return self.error(400, "", "Quota exceeded: the maximum number of instances is reached")
        if "sshKey" in body and not any(
            k["name"] == body["sshKey"]["name"] for k in self.ssh_keys.values()
        ):
            return self.error(400, "", f"SSH key {body['sshKey']['name']} does not exist")
        if error := self.boot_image_error(region, body["bootFrom"].get("imageId"), flavor):
            return error
        instance_id = str(uuid.uuid4())
        now = self.clock()
        self.instances[instance_id] = {
            "id": instance_id,
            "name": body["name"],
            "status": "BUILD",
            "region": region,
            "flavorId": flavor["id"],
            "imageId": body["bootFrom"].get("imageId"),
            "planCode": flavor["planCodes"]["hourly"],
            "ipAddresses": [],
            "created": self._iso(now),
            "monthlyBilling": None,
            "_since": now,
            "_hidden": True,  # appears once its operation completes (or time passed)
            "_visible_at": now + self.operation_seconds,
        }
        self.user_data[instance_id] = body.get("userData", "")
        operation_id = str(uuid.uuid4())
        self.operations[operation_id] = {
            "id": operation_id,
            "action": "instance#create",
            "status": "created",
            "createdAt": self._iso(now),
            "regions": [region],
            "resourceId": None,
            "subOperations": [],
            "_polls": 0,
            "_instance": instance_id,
            "_fail": self.fail_operations > 0,
        }
        if self.fail_operations > 0:
            self.fail_operations -= 1
            self.instances[instance_id]["_visible_at"] = float("inf")
        return json_response(
            200, {k: v for k, v in self.operations[operation_id].items() if not k.startswith("_")}
        )

    @route("GET", "/1.0/cloud/project/{serviceName}/operation/{operationId}")
    def operation(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        op = self.operations.get(request.params["operationId"])
        if op is None:
            return self.error(404, "", "Operation not found")
        op["_polls"] += 1
        if op.get("_fail") and op["_polls"] >= self.operation_polls:
            op["status"] = "in-error"
            self.instances.pop(op["_instance"], None)
        elif op["_polls"] >= self.operation_polls and op["status"] not in ("completed", "in-error"):
            instance_id = op["_instance"]
            op["status"] = "completed"
            op["subOperations"] = [
                {
                    "id": str(uuid.uuid4()),
                    "action": "instance#create",
                    "status": "completed",
                    "resourceId": instance_id,
                }
            ]
            if instance_id in self.instances:
                self.instances[instance_id]["_hidden"] = False
        elif op["status"] == "created":
            op["status"] = "in-progress"
        return json_response(200, {k: v for k, v in op.items() if not k.startswith("_")})

    @route("GET", "/1.0/cloud/project/{serviceName}/instance")
    def instances_list(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        region = request.arg("region")
        items = [
            self._view(i)
            for i in self.instances.values()
            if self._visible(i) and (not region or i["region"] == region)
        ]
        return json_response(200, items)

    def _instance(self, request: EmuRequest) -> dict[str, Any] | EmuResponse:
        if error := self._project(request):
            return error
        instance = self.instances.get(request.params["instanceId"])
        if instance is None or not self._visible(instance):
            return self.error(404, "", f"Instance {request.params['instanceId']} not found")
        return instance

    @route("GET", "/1.0/cloud/project/{serviceName}/instance/{instanceId}")
    def get_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        return found if isinstance(found, EmuResponse) else json_response(200, self._view(found))

    @route("DELETE", "/1.0/cloud/project/{serviceName}/instance/{instanceId}")
    def delete_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        if isinstance(found, EmuResponse):
            return found
        del self.instances[found["id"]]
        return json_response(200, None)
