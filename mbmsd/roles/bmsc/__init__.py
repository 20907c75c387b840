"""
The BM-SC.UPF role (TS 26.237 10.2.4, TS 33.246 6.3): stores the SCF's
authorizations, authenticates MSK registrations with HTTP Digest over GBA
(B-TID, Ks_NAF from Zn), and delivers MSKs to the UE by MIKEY over UDP.
"""
