"""
Errors that cross the boundary between roles (the ports of interfaces.py).
"""


class UnknownBTID(Exception):
    """
    Zn: the B-TID is unknown or its key has expired (TS 29.109
    DIAMETER_ERROR_TRANSACTION_IDENTIFIER_INVALID): the UE must bootstrap again.
    """


class NafNotAuthorized(Exception):
    """
    Zn: the asking peer is not a configured NAF for this NAF_Id.
    """
