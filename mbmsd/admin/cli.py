"""
mbmsd-admin: provisioning from the shell.

Against a running node's admin API (C{--url}, C{--token-file}; C{--ca},
C{--cert}, C{--key} for HTTPS and mutual TLS)::

    mbmsd-admin --url http://127.0.0.1:8089 --token-file var/admin.token \\
        subscribers add --impi user2@home1.net --impu sip:user2@home1.net \\
        --k HEX --op HEX
    mbmsd-admin ... subscribers get|update|delete|state IMPI
    mbmsd-admin ... subscribers list [--after IMPI] [--limit N]
    mbmsd-admin ... subscriptions set IMPU SERVICE... | subscriptions get IMPU
    mbmsd-admin ... services add ID [--key-group N] | get ID | delete ID | list

On the database directly, with the node's config (C{--config}, repeatable
as for twistd)::

    mbmsd-admin --config etc/mbmsd.toml import subscribers FILE.csv
    mbmsd-admin --config etc/mbmsd.toml export subscribers [--with-keys] [-o FILE]
    mbmsd-admin [--config ...] migrate --from sqlite:PATH --to postgresql://... \\
        [--key-file FILE]

API answers are printed as JSON; the exit status is 0 only on success.
"""

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

from mbmsd.admin.config import TokenFileError, read_token

OFFLINE = ("import", "export", "migrate")


def _parser():
    p = argparse.ArgumentParser(prog="mbmsd-admin", description="mbmsd provisioning.")
    p.add_argument("--url", help="the admin API's base URL, e.g. http://127.0.0.1:8089")
    p.add_argument("--token-file", help="file holding the API's bearer token (mode 0600)")
    p.add_argument("--ca", help="PEM: CAs that sign the admin API's certificate (HTTPS)")
    p.add_argument("--cert", help="PEM: client certificate (mutual TLS)")
    p.add_argument("--key", help="PEM: its private key")
    p.add_argument("--config", action="append", default=[],
                   help="the node's TOML config (repeatable): for import, export, migrate")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per API request")
    sub = p.add_subparsers(dest="command", required=True)

    def keys(parser, required):
        parser.add_argument("--k", required=required, help="K (hex)")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--op", help="OP (hex; OPc is derived and stored)")
        group.add_argument("--opc", help="OPc (hex)")
        parser.add_argument("--amf", help="AMF (hex, default 8000)")
        parser.add_argument("--sqn", help="SQN (hex, 6 bytes)")

    subs = sub.add_parser("subscribers", help="subscribers (API)").add_subparsers(
        dest="action", required=True)
    add = subs.add_parser("add", help="create a subscriber")
    add.add_argument("--impi", required=True)
    add.add_argument("--impu", action="append", required=True, help="repeatable")
    keys(add, True)
    update = subs.add_parser("update", help="change a subscriber's fields")
    update.add_argument("impi")
    update.add_argument("--impu", action="append", help="repeatable: the new IMPUs")
    keys(update, False)
    for name in ("get", "delete", "state"):
        subs.add_parser(name).add_argument("impi")
    listing = subs.add_parser("list", help="a page of subscribers")
    listing.add_argument("--after", default="")
    listing.add_argument("--limit", type=int, default=100)

    subscriptions = sub.add_parser("subscriptions", help="subscriptions (API)").add_subparsers(
        dest="action", required=True)
    s = subscriptions.add_parser("set", help="the services an IMPU is subscribed to")
    s.add_argument("impu")
    s.add_argument("services", nargs="*")
    subscriptions.add_parser("get").add_argument("impu")

    services = sub.add_parser("services", help="MBMS User Services (API)").add_subparsers(
        dest="action", required=True)
    s = services.add_parser("add")
    s.add_argument("id")
    s.add_argument("--key-group", type=int, help="Key Group of its MSK IDs (default: from ID)")
    services.add_parser("get").add_argument("id")
    services.add_parser("delete").add_argument("id")
    services.add_parser("list")

    imp = sub.add_parser("import", help="import subscribers from CSV (database)")
    imp.add_argument("what", choices=["subscribers"])
    imp.add_argument("file")
    imp.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    exp = sub.add_parser("export", help="export subscribers as CSV (database)")
    exp.add_argument("what", choices=["subscribers"])
    exp.add_argument("--with-keys", action="store_true",
                     help="include K and OPc in clear (the file is made 0600)")
    exp.add_argument("-o", "--output", help="file to write (default: standard output)")
    mig = sub.add_parser("migrate", help="copy a SQLite database to PostgreSQL")
    mig.add_argument("--from", dest="source", required=True, help="sqlite:PATH")
    mig.add_argument("--to", dest="target", required=True, help="postgresql://...")
    mig.add_argument("--key-file", help="the node key (default: storage.key_file of --config)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command in OFFLINE:
        return _offline(args)
    return _online(args)


def _fail(text):
    sys.stderr.write("mbmsd-admin: %s\n" % (text,))
    return 1


# ---------------------------------------------------------------- API


def _fields(args):
    body = {}
    for name in ("k", "op", "opc", "amf", "sqn"):
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    if getattr(args, "impu", None):
        body["impus"] = args.impu
    return body


def _request(args):
    a = args.action
    if args.command == "subscribers":
        if a == "add":
            return "POST", "/subscribers", dict(_fields(args), impi=args.impi)
        if a == "list":
            return "GET", "/subscribers?" + urlencode({"after": args.after,
                                                       "limit": args.limit}), None
        path = "/subscribers/" + quote(args.impi, safe="@")
        if a == "update":
            return "PUT", path, _fields(args)
        if a == "state":
            return "GET", path + "/state", None
        return {"get": "GET", "delete": "DELETE"}[a], path, None
    if args.command == "subscriptions":
        path = "/subscriptions/" + quote(args.impu, safe=":@")
        if a == "set":
            return "PUT", path, {"services": args.services}
        return "GET", path, None
    if a == "add":
        return "POST", "/services", {"id": args.id, "key_group": args.key_group}
    if a == "list":
        return "GET", "/services", None
    return {"get": "GET", "delete": "DELETE"}[a], "/services/" + quote(args.id, safe=":"), None


def _online(args):
    if not args.url or not args.token_file:
        return _fail("--url and --token-file are needed for %s" % (args.command,))
    try:
        token = read_token(args.token_file)
    except TokenFileError as e:
        return _fail(str(e).replace("admin.token_file", "--token-file"))
    method, path, body = _request(args)
    url = args.url.rstrip("/") + "/admin/v1" + path
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
    headers = {"Authorization": "Bearer " + token, "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout, context=context) as r:
            code, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return _fail("%s: %s" % (args.url, getattr(e, "reason", e)))
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = {"error": raw.decode("utf-8", "replace")}
    if 200 <= code < 300:
        if answer is not None:
            sys.stdout.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
        return 0
    answer = answer or {}
    field = answer.get("field")
    return _fail("%d: %s%s" % (code, "%s: " % (field,) if field else "",
                               answer.get("error", "failed")))


# ---------------------------------------------------------------- database


def _offline(args):
    if args.command == "migrate":
        return _migrate(args)
    if not args.config:
        return _fail("--config FILE (the node's config) is needed for %s" % (args.command,))
    from twisted.internet.task import react

    from mbmsd import config as c
    from mbmsd.nodeconfig import load_config

    try:
        config = load_config(args.config)
    except c.ConfigError as e:
        for line in e.lines:
            sys.stderr.write("mbmsd-admin: config error: %s\n" % (line,))
        return 1
    status = []

    def run(reactor):
        from mbmsd.nodeconfig import storageFactories

        storage = storageFactories()[config["storage"]["backend"]].open(
            config["storage"], reactor)
        d = storage.open()
        d.addCallback(lambda _: _import(args, storage) if args.command == "import"
                      else _export(args, storage))
        d.addCallback(status.append)

        def failed(f):
            status.append(_fail(f.getErrorMessage()))

        d.addErrback(failed)
        d.addBoth(lambda _: storage.close())
        return d

    try:
        react(run, [])
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code
    return status[0] if status else 1


def _import(args, storage):
    from mbmsd.admin.bulk import import_subscribers

    try:
        stream = open(args.file, "r", encoding="utf-8", newline="")
    except OSError as e:
        return _fail("%s: %s" % (args.file, e.strerror or e))

    def done(summary):
        stream.close()
        sys.stdout.write("import %s: %s\n" % (args.file, summary.line()))
        return 1 if summary.bad else 0

    d = import_subscribers(storage.subscribers, stream, args.file,
                           lambda line: sys.stderr.write(line + "\n"), batch=max(1, args.batch))
    return d.addCallback(done)


def _export(args, storage):
    from mbmsd.admin.bulk import export_subscribers

    if args.with_keys:
        sys.stderr.write("mbmsd-admin: warning: the export holds every subscriber's K and "
                         "OPc in clear; keep it as you keep the node key\n")
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o600 if args.with_keys else 0o644)
        stream = os.fdopen(fd, "w", encoding="utf-8", newline="")
    else:
        stream = sys.stdout

    def done(count):
        if stream is not sys.stdout:
            stream.close()
        sys.stderr.write("mbmsd-admin: exported %d subscriber(s)%s\n"
                         % (count, " with keys" if args.with_keys else ""))
        return 0

    return export_subscribers(storage.subscribers, stream, args.with_keys).addCallback(done)


def _migrate(args):
    from mbmsd.admin.migrate import MigrateError, migrate
    from mbmsd.storage.sealing import KeyFileError

    keyFile = args.key_file
    if keyFile is None and args.config:
        from mbmsd import config as c
        from mbmsd.nodeconfig import load_config

        try:
            keyFile = load_config(args.config)["storage"].get("key_file")
        except c.ConfigError as e:
            for line in e.lines:
                sys.stderr.write("mbmsd-admin: config error: %s\n" % (line,))
            return 1
    if keyFile is None:
        return _fail("migrate needs the node key: --key-file FILE (or --config)")
    try:
        migrate(args.source, args.target, keyFile, lambda line: sys.stdout.write(line + "\n"))
    except (MigrateError, KeyFileError) as e:
        return _fail("migrate: %s" % (e,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
