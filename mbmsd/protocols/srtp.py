"""
SRTP (RFC 3711) with the profile's transform, AES-CM-128 and HMAC-SHA1-80,
done by libsrtp 2 through pylibsrtp: a maintained, audited implementation of
the transform, not ours. The master key is the MTK and the master salt its
salt (RFC 4563 2).

L{SrtpError} and its subclasses are the only errors raised for bad packets;
no key ever appears in a message or a repr.
"""

import pylibsrtp

from mbmsd import profile

__all__ = ["SrtpError", "AuthError", "ReplayError", "Protector", "Unprotector", "MAX_RTP_SIZE"]

# The largest RTP packet pylibsrtp takes to protect (its 1500-octet buffer
# less the room for a trailer); the 10-octet tag comes on top.
MAX_RTP_SIZE = 1500 - pylibsrtp.SRTP_MAX_TRAILER_LEN


class SrtpError(ValueError):
    """An SRTP packet could not be processed."""


class AuthError(SrtpError):
    """The authentication tag did not verify (wrong key, or altered)."""


class ReplayError(SrtpError):
    """The packet's index was seen already or is too old (RFC 3711 3.3.2)."""


def _policy(key: bytes, salt: bytes, ssrcType: int) -> pylibsrtp.Policy:
    if len(key) != profile.SRTP_MASTER_KEY_LEN or len(salt) != profile.SRTP_MASTER_SALT_LEN:
        raise ValueError("SRTP master key must be %d bytes and its salt %d"
                         % (profile.SRTP_MASTER_KEY_LEN, profile.SRTP_MASTER_SALT_LEN))
    policy = pylibsrtp.Policy(key=bytes(key) + bytes(salt), ssrc_type=ssrcType,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return policy


class Protector:
    """
    The sender's SRTP context of one master key, for any SSRC it sends.

    C{protectFast} is libsrtp's protect itself, for a forwarding loop that
    checked the packet first (bytes of at most L{MAX_RTP_SIZE}): it raises
    L{PROTECT_ERRORS}.
    """

    __slots__ = ("_session", "protectFast")

    def __init__(self, key: bytes, salt: bytes) -> None:
        self._session = pylibsrtp.Session(_policy(key, salt, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self.protectFast = self._session.protect

    def __repr__(self) -> str:
        return "<Protector>"

    def protect(self, rtp: bytes) -> bytes:
        """@return: the SRTP packet of the RTP packet C{rtp} (bytes)."""
        try:
            return self._session.protect(rtp)
        except PROTECT_ERRORS as e:
            raise SrtpError("cannot protect: %s" % (e,)) from None


PROTECT_ERRORS = (pylibsrtp.Error, ValueError, TypeError)


class Unprotector:
    """
    The receiver's SRTP context of one master key, for any SSRC (RFC 3711
    3.3: authentication, replay check, decryption).
    """

    __slots__ = ("_session",)

    def __init__(self, key: bytes, salt: bytes) -> None:
        self._session = pylibsrtp.Session(_policy(key, salt, pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def __repr__(self) -> str:
        return "<Unprotector>"

    def unprotect(self, srtp: bytes) -> bytes:
        """
        @return: the RTP packet (bytes). @raise AuthError: the tag did not
        verify. @raise ReplayError: a replayed or too old packet.
        @raise SrtpError: anything else (too short, too long).
        """
        try:
            return self._session.unprotect(bytes(srtp))
        except pylibsrtp.Error as e:
            text = str(e)
            if text.startswith("authentication"):
                raise AuthError("authentication failed") from None
            if text.startswith("replay"):
                raise ReplayError(text) from None
            raise SrtpError(text) from None
        except ValueError as e:
            raise SrtpError(str(e)) from None
