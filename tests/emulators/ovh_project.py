"""OVHcloud emulator: the project-level routes (auth time, project, regions, flavours, images,
SSH keys, the public price catalogue), mixed into ``OvhEmulator`` (its docstring describes the
behaviour)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route
from tests.emulators.ovh_data import FLAVORS, REGIONS

if TYPE_CHECKING:
    from tests.emulators.ovh import OvhEmulator as _Base
else:
    _Base = object


class OvhProjectMixin(_Base):
    """``/auth/time``, ``/cloud/project/{id}`` with its regions, flavours, images and SSH keys,
    and ``/order/catalog/public/cloud`` for ``OvhEmulator``."""

    @route("GET", "/1.0/auth/time")
    def auth_time(self, request: EmuRequest) -> EmuResponse:
        return json_response(200, int(self.clock()))

    @route("GET", "/1.0/cloud/project/{serviceName}")
    def project(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(
            200,
            {
                "project_id": self.project_id,
                "projectName": "bivy",
                "description": "bivy",
                "status": "ok",
                "planCode": "project.2018",
            },
        )

    @route("GET", "/1.0/cloud/project/{serviceName}/region")
    def regions(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(200, list(REGIONS))

    @route("GET", "/1.0/cloud/project/{serviceName}/flavor")
    def flavors_list(self, request: EmuRequest) -> EmuResponse:
        region = request.arg("region")
        items = [
            {**f, "available": f["name"] not in self.unavailable}
            for f in self.flavors
            if not region or f["region"] == region
        ]
        return self._project(request) or json_response(200, items)

    @route("GET", "/1.0/cloud/project/{serviceName}/image")
    def images_list(self, request: EmuRequest) -> EmuResponse:
        region = request.arg("region")
        items = [i for i in self.images if not region or i["region"] == region]
        return self._project(request) or json_response(200, items)

    @route("GET", "/1.0/cloud/project/{serviceName}/sshkey")
    def sshkeys(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(200, list(self.ssh_keys.values()))

    @route("POST", "/1.0/cloud/project/{serviceName}/sshkey")
    def create_sshkey(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        body = request.json()
        if any(k["name"] == body["name"] for k in self.ssh_keys.values()):
            return self.error(409, "", f"SSH key {body['name']} already exists")
        key = {
            "id": uuid.uuid4().hex,
            "name": body["name"],
            "publicKey": body["publicKey"],
            "regions": list(REGIONS),
        }
        self.ssh_keys[key["id"]] = key
        return json_response(200, key)

    @route("GET", "/1.0/order/catalog/public/cloud")
    def catalog(self, request: EmuRequest) -> EmuResponse:
        addons = []
        for name, (_v, _r, _d, _t, hourly, monthly) in FLAVORS.items():
            addons.append(
                {
                    "planCode": f"{name}.consumption",
                    "product": f"publiccloud-instance-{name}",
                    "pricingType": "consumption",
                    "pricings": [
                        {
                            "capacities": ["consumption"],
                            "interval": 1,
                            "intervalUnit": "hour",
                            "price": hourly,
                            "tax": 0,
                            "description": "hourly",
                        }
                    ],
                }
            )
            if monthly:
                addons.append(
                    {
                        "planCode": f"{name}.monthly.postpaid",
                        "product": f"publiccloud-instance-{name}",
                        "pricingType": "rental",
                        "pricings": [
                            {
                                "capacities": ["renew"],
                                "interval": 1,
                                "intervalUnit": "month",
                                "price": monthly,
                                "tax": 0,
                                "description": "monthly",
                            }
                        ],
                    }
                )
        addons.append(self.catalog_snapshot_addon())
        subsidiary = request.arg("ovhSubsidiary", "FR")
        currency = {"CA": "CAD", "US": "USD"}.get(subsidiary or "FR", "EUR")
        return json_response(
            200,
            {
                "catalogId": 1,
                "locale": {"currencyCode": currency, "subsidiary": subsidiary, "taxRate": 20},
                "plans": [],
                "addons": addons,
            },
        )
