"""
Subscribers in bulk, on the node's storage directly: C{import subscribers}
from a CSV file and C{export subscribers} to one.

The CSV has the header C{impi,impus,k,op,opc,amf,sqn}: IMPUs separated by
spaces, one of op and opc empty, keys in hex. Import reads it row by row in
batches (one transaction each), so memory stays flat whatever the file's
size; a bad row is reported with its line and field and skipped; a second
run of the same file changes nothing (rows whose stored data is the same are
not written).
"""

import csv

from twisted.internet.defer import inlineCallbacks, succeed

from mbmsd.provisioning import FieldError, subscriber_from_fields

COLUMNS = ("impi", "impus", "k", "op", "opc", "amf", "sqn")
BATCH = 1000


class ImportSummary:
    def __init__(self):
        self.rows = self.created = self.updated = self.unchanged = self.bad = 0

    def line(self):
        return ("%d row(s): %d created, %d updated, %d unchanged, %d bad"
                % (self.rows, self.created, self.updated, self.unchanged, self.bad))


def _row_values(row):
    values = {name: (row.get(name) or "").strip() for name in COLUMNS}
    values["impus"] = values["impus"].split()
    return values


@inlineCallbacks
def import_subscribers(store, stream, name, report, batch=BATCH):
    """
    @param store: the L{mbmsd.interfaces.ISubscriberStore}.
    @param stream: the CSV text stream (opened with C{newline=""}).
    @param name: the file's name in error lines.
    @param report: called with each error line (C{"FILE:LINE: field: problem"}).
    @return: Deferred firing with the L{ImportSummary}.
    """
    summary = ImportSummary()
    reader = csv.DictReader(stream)
    header = reader.fieldnames
    if header is None or [h.strip() for h in header] != list(COLUMNS):
        report("%s:1: header: must be %s" % (name, ",".join(COLUMNS)))
        summary.bad = 1
        return summary
    pending, impis = [], set()

    def counted(counts):
        created, updated, unchanged = counts
        summary.created += created
        summary.updated += updated
        summary.unchanged += unchanged

    # one batch written while the next is read: at most two in memory
    inflight = [None]

    def flush(drain=False):
        rows = list(pending)
        del pending[:]
        impis.clear()
        previous, inflight[0] = inflight[0], None
        if rows:
            inflight[0] = store.provisionBatch(rows).addCallback(counted)
        if drain and inflight[0] is not None:
            # the same IMPI again soon: nothing may run beside its earlier row
            return (previous or succeed(None)).addCallback(lambda _: flush(True))
        return previous

    for row in reader:
        summary.rows += 1
        if None in row:
            report("%s:%d: row: more fields than the header's %d"
                   % (name, reader.line_num, len(COLUMNS)))
            summary.bad += 1
            continue
        try:
            subscriber = subscriber_from_fields(_row_values(row))
        except FieldError as e:
            report("%s:%d: %s: %s" % (name, reader.line_num, e.field, e.problem))
            summary.bad += 1
            continue
        if subscriber.impi in impis:
            # the same IMPI again: the earlier row first (the later one wins)
            yield flush(drain=True)
        pending.append(subscriber)
        impis.add(subscriber.impi)
        if len(pending) >= batch:
            yield flush()
    yield flush(drain=True)
    return summary


@inlineCallbacks
def export_subscribers(store, stream, withKeys=False, page=BATCH):
    """
    Write every subscriber as CSV (the import's header), page by page; K and
    OPc only with C{withKeys} (OP is never stored: its column stays empty).

    @return: Deferred firing with the number of rows written.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    after, count = "", 0
    while True:
        rows = yield store.page(after, page, withKeys=withKeys)
        for s in rows:
            writer.writerow((s.impi, " ".join(s.impus),
                             s.k.hex() if withKeys else "", "",
                             s.opc.hex() if withKeys else "",
                             bytes(s.amf).hex(), s.sqn.to_bytes(6, "big").hex()))
        count += len(rows)
        if len(rows) < page:
            return count
        after = rows[-1].impi
