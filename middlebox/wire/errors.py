"""The wire layer's one documented error."""


class WireError(ValueError):
    """Bytes that are not a TCP segment this layer handles, or an impossible build request.

    Remedy for callers handling packets: pass the packet unchanged (it is not ours to convert).
    """
