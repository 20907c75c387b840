"""
Wire formats and algorithms (GBA, HTTP Digest, MIKEY, SIP): the ground floor.

Nothing here imports a role, a store or the node.
"""
