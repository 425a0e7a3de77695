"""Helpdesk webhook vendors: one module each (parser, authentication, delivery identity, event header), the
:class:`~adapters.vendors.declaration.Vendor` they declare, their shared payload helpers, and the registry the
webhook service serves (docs/adapters.md, "Adding a vendor")."""
