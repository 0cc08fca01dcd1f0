"""Compare the same size class (cores, memory) across configured accounts by price."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from app.domain import Price, Size

__all__ = ["Catalogue", "Offer", "SizeClass", "compare_sizes", "size_classes"]

#: How far a size's memory may be from the class's and still count as the same class
#: (OVH sells "4 GB" as 4000 MB, DigitalOcean as 4096 MiB).
MEMORY_TOLERANCE = 0.15


@dataclass(frozen=True)
class SizeClass:
    """A comparable size: vCPU count and memory in GB.

    Attributes:
        cores: vCPUs.
        memory_gb: memory in GB (matched within ``MEMORY_TOLERANCE``).
    """

    cores: int
    memory_gb: float

    @classmethod
    def of(cls, size: Size) -> SizeClass:
        return cls(size.cores, float(round(size.memory_gb)))

    def matches(self, size: Size) -> bool:
        if size.cores != self.cores:
            return False
        return abs(size.memory_gb - self.memory_gb) <= self.memory_gb * MEMORY_TOLERANCE

    def label(self) -> str:
        return f"{self.cores} vCPU · {self.memory_gb:g} GB"


@dataclass(frozen=True)
class Catalogue:
    """One account's sizes, as ``Provider.sizes()`` returned them.

    Attributes:
        account: the account id.
        provider: the provider kind.
        sizes: the sizes with their prices per region.
        region: the region the user prefers for this account, or None for any region.
    """

    account: str
    provider: str
    sizes: Sequence[Size]
    region: str | None = None


@dataclass(frozen=True)
class Offer:
    """The cheapest size of the class in one account.

    Attributes:
        account, provider: where it is.
        size: the size.
        region: the region of that price.
        price: the price there, in the provider's currency.
        comparable_hourly: the hourly price converted to the comparison currency, or None
            when no rate for the provider's currency was given.
    """

    account: str
    provider: str
    size: Size
    region: str
    price: Price
    comparable_hourly: Decimal | None


def _cheapest(
    catalogue: Catalogue, size_class: SizeClass, architecture: str | None
) -> tuple[Size, str, Price] | None:
    best: tuple[Size, str, Price] | None = None
    for size in catalogue.sizes:
        if size.deprecated or not size_class.matches(size):
            continue
        if architecture and size.architecture != architecture:
            continue
        if catalogue.region is not None:
            price = size.price_in(catalogue.region)
            candidates = [(catalogue.region, price)] if price is not None else []
        else:
            candidates = sorted(size.prices.items())
        for region, price in candidates:
            if best is None or price.hourly < best[2].hourly:
                best = (size, region, price)
    return best


def compare_sizes(
    catalogues: Sequence[Catalogue],
    size_class: SizeClass,
    *,
    architecture: str | None = None,
    currency: str = "EUR",
    rates: Mapping[str, Decimal] | None = None,
) -> list[Offer]:
    """The cheapest size of ``size_class`` per account, cheapest first.

    Prices stay in each provider's currency; ``rates`` (currency → value of one unit in
    ``currency``) makes them comparable. Offers whose currency has no rate come after the
    comparable ones, ordered by their own amount. Accounts with no matching size are left out.
    """
    known = {currency: Decimal(1), **(rates or {})}
    offers = []
    for catalogue in catalogues:
        found = _cheapest(catalogue, size_class, architecture)
        if found is None:
            continue
        size, region, price = found
        rate = known.get(price.currency)
        offers.append(
            Offer(
                account=catalogue.account,
                provider=catalogue.provider,
                size=size,
                region=region,
                price=price,
                comparable_hourly=None if rate is None else price.hourly * rate,
            )
        )
    return sorted(
        offers,
        key=lambda o: (
            o.comparable_hourly is None,
            o.comparable_hourly if o.comparable_hourly is not None else o.price.hourly,
            o.account,
        ),
    )


def size_classes(catalogues: Sequence[Catalogue]) -> list[SizeClass]:
    """Every size class offered by at least one account, smallest first (for a picker)."""
    found = {SizeClass.of(s) for c in catalogues for s in c.sizes if not s.deprecated}
    return sorted(found, key=lambda k: (k.cores, k.memory_gb))
