"""
SIP for mbmsd (RFC 3261): bytes-based messages (L{mbmsd.sip.message}),
transactions on an injected clock (L{mbmsd.sip.transaction}) and the Twisted
UDP/TCP adapters (L{mbmsd.sip.transport}).

Ground floor: nothing here imports a role, a store or the node.
"""
