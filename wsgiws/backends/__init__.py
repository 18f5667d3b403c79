"""Transports that carry hub messages between processes (see :mod:`wsgiws.hub`)."""
