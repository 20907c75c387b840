"""
Provisioning at carrier scale: the admin HTTP API (C{[admin]}, L{api}), its
service in the node's tree (L{service}) and C{mbmsd-admin} (L{cli}).
"""
