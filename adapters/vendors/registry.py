"""The webhook vendors the service serves, in one table: add a vendor's module here (docs/adapters.md, "Adding a
vendor"). Each route, metric label, delivery id prefix and secret comes from the vendor's own declaration."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from adapters.vendors import chatwoot, freshdesk, generic, helpscout, intercom, zendesk
from adapters.vendors.declaration import Vendor


def vendor_table(vendors: Iterable[Vendor]) -> Mapping[str, Vendor]:
    """Read-only ``{name: vendor}``; raises ValueError when two vendors share a name."""
    table: dict[str, Vendor] = {}
    for vendor in vendors:
        if vendor.name in table:
            raise ValueError(f"vendor {vendor.name!r} is declared twice")
        table[vendor.name] = vendor
    return MappingProxyType(table)


VENDORS: Mapping[str, Vendor] = vendor_table(
    module.VENDOR for module in (zendesk, freshdesk, intercom, helpscout, chatwoot, generic))
