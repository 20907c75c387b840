"""
SIP for mbmsd (RFC 3261): the grammar of URIs, name-addr, Via and parameters
(L{mbmsd.sip.grammar}), headers (L{mbmsd.sip.headers}), bytes-based messages
(L{mbmsd.sip.message}), multipart bodies (L{mbmsd.sip.multipart}),
transactions on an injected clock (L{mbmsd.sip.transaction}) and the Twisted
UDP/TCP adapters (L{mbmsd.sip.transport}).

Ground floor: nothing here imports a role, a store or the node.
"""
