"""compare_sizes: the same size class across providers, cheapest first."""

from __future__ import annotations

from decimal import Decimal

from app.domain import Price, Size
from app.services.compare import Catalogue, SizeClass, compare_sizes, size_classes
from tests.emulators.base import ManualClock


def size(name: str, cores: int, memory: float, prices: dict[str, tuple[str, str]], **kw) -> Size:
    return Size(
        name=name,
        cores=cores,
        memory_gb=memory,
        disk_gb=40,
        prices={
            r: Price(currency=c, hourly=Decimal(h), monthly=Decimal(h) * 730)
            for r, (c, h) in prices.items()
        },
        **kw,
    )


HETZNER = Catalogue(
    "hz",
    "hetzner",
    [
        size("cx23", 2, 4, {"nbg1": ("EUR", "0.0080"), "hel1": ("EUR", "0.0075")}),
        size("cax11", 2, 4, {"nbg1": ("EUR", "0.0060")}, architecture="arm"),
        size("cx33", 4, 8, {"nbg1": ("EUR", "0.0150")}),
    ],
)
DO = Catalogue("do", "digitalocean", [size("s-2vcpu-4gb", 2, 4.0, {"fra1": ("USD", "0.03571")})])
OVH = Catalogue("ovh", "ovh", [size("d2-4", 2, 4.0, {"GRA11": ("EUR", "0.0165")})])
SCW = Catalogue("scw", "scaleway", [size("DEV1-S", 2, 2, {"fr-par-1": ("EUR", "0.0088")})])


def test_cheapest_per_account_ordered_by_converted_price() -> None:
    offers = compare_sizes([DO, OVH, HETZNER, SCW], SizeClass(2, 4), rates={"USD": Decimal("0.90")})
    assert [(o.account, o.size.name, o.region) for o in offers] == [
        ("hz", "cax11", "nbg1"),
        ("ovh", "d2-4", "GRA11"),
        ("do", "s-2vcpu-4gb", "fra1"),
    ]
    assert offers[2].comparable_hourly == Decimal("0.03571") * Decimal("0.90")
    assert offers[2].price.currency == "USD"  # the provider's own price is kept


def test_architecture_and_preferred_region_narrow_the_choice() -> None:
    pinned = Catalogue(HETZNER.account, HETZNER.provider, HETZNER.sizes, region="hel1")
    offers = compare_sizes([pinned], SizeClass(2, 4), architecture="x86")
    assert [(o.size.name, o.region, o.price.hourly) for o in offers] == [
        ("cx23", "hel1", Decimal("0.0075"))
    ]
    assert (
        compare_sizes([Catalogue("x", "hetzner", HETZNER.sizes, region="ash")], SizeClass(2, 4))
        == []
    )


def test_currencies_without_a_rate_come_last() -> None:
    offers = compare_sizes([DO, OVH], SizeClass(2, 4))
    assert [o.account for o in offers] == ["ovh", "do"]
    assert offers[1].comparable_hourly is None


def test_memory_tolerance_groups_4000mb_and_4gib_but_not_2gb() -> None:
    klass = SizeClass(2, 4)
    assert klass.matches(size("a", 2, 3.9, {}))
    assert klass.matches(size("b", 2, 4.0, {}))
    assert not klass.matches(size("c", 2, 2.0, {}))
    assert not klass.matches(size("d", 3, 4.0, {}))


def test_deprecated_sizes_are_ignored_and_classes_listed() -> None:
    old = Catalogue(
        "old", "hetzner", [size("cx21", 2, 4, {"nbg1": ("EUR", "0.001")}, deprecated=True)]
    )
    assert compare_sizes([old], SizeClass(2, 4)) == []
    assert [k.label() for k in size_classes([HETZNER, SCW, old])] == [
        "2 vCPU · 2 GB",
        "2 vCPU · 4 GB",
        "4 vCPU · 8 GB",
    ]


async def test_with_live_sizes_from_three_emulated_providers() -> None:
    from app.providers.digitalocean import DigitalOceanProvider
    from app.providers.ovh import OvhProvider
    from app.providers.scaleway import ScalewayProvider
    from tests.contract.harness import HARNESSES

    catalogues = []
    for harness, cls in zip(
        HARNESSES[1:], (DigitalOceanProvider, ScalewayProvider, OvhProvider), strict=True
    ):
        emulator, options = harness.make(ManualClock())
        provider = cls(options, transport=emulator.transport())
        catalogues.append(
            Catalogue(harness.kind, harness.kind, await provider.sizes(harness.region))
        )
        await provider.aclose()
    offers = compare_sizes(catalogues, SizeClass(2, 4), rates={"USD": Decimal("0.9")})
    assert [(o.provider, o.size.name) for o in offers] == [
        ("scaleway", "PLAY2-NANO"),
        ("ovh", "d2-4"),
        ("digitalocean", "s-2vcpu-4gb"),
    ]
