"""
The P-CSCF role (TS 24.229 5.2, docs/design.md 6 steps 1, 3): the UE's first SIP hop.
It registers UEs with Digest AKA against the subscriber store
(L{registrar}), and proxies their requests to the SCF with an asserted
identity (L{proxy}); L{service} owns the UDP and TCP listeners.
"""
