"""The SCF role: the SIP UAS of the IMS-based MBMS user service (TS 26.237 10.2.3)."""
