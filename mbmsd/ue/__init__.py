"""
mbms-ue: the UE simulator and conformance client. It stands on the protocol
libraries alone (it is a peer, not part of the node).
"""
