"""middlebox: convert plain TCP to Multipath TCP (RFC 8684) on the wire, packet by packet."""

__version__ = "0.1.0"
