"""
The BSF role: GBA bootstrapping over Ub (TS 33.220 4.5.2, TS 24.109 4) and
NAF key retrieval over Zn (TS 33.220 4.5.3; HTTP/JSON per docs/design.md 7.6).
"""
