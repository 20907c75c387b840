# The twistd plugin: `twistd -n mbmsd --config etc/mbmsd.toml`.
# Everything lives in mbmsd.tap; there is no __init__.py in twisted/ on purpose.
from twisted.application.service import ServiceMaker

mbmsd = ServiceMaker(
    "mbmsd",
    "mbmsd.tap",
    "IMS-based MBMS security node (BSF, P-CSCF, SCF, BM-SC.UPF)",
    "mbmsd",
)
