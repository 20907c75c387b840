"""
mbmsd: the security procedures for IMS-based MBMS user services (3GPP TS 26.237
clause 10) as one Twisted daemon with four roles: BSF, P-CSCF, SCF and BM-SC.UPF.
"""

__version__ = "0.1.0"
