"""
The CSV import and export (mbmsd/admin/bulk.py) on the in-memory store, with
the batch boundaries moved around: the same outcome whatever the batch.
"""

import io

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.admin.bulk import export_subscribers, import_subscribers
from mbmsd.storage.memory import MemoryStorage

K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"
HEADER = "impi,impus,k,op,opc,amf,sqn\n"


def row(impi, amf="8000", sqn=""):
    return "%s,sip:%s,%s,,%s,%s,%s\n" % (impi, impi, K, OPC, amf, sqn)


class ImportTests(SynchronousTestCase):
    def run_import(self, text, batch):
        storage = MemoryStorage()
        errors = []
        summary = self.successResultOf(import_subscribers(
            storage.subscribers, io.StringIO(text), "f.csv", errors.append, batch=batch))
        return storage, summary, errors

    def test_sameImpiTwiceTheLaterWinsInAnyBatch(self):
        text = HEADER + row("a@h") + row("b@h") + row("a@h", amf="0001") + row("c@h")
        for batch in (1, 2, 3, 1000):
            storage, summary, errors = self.run_import(text, batch)
            self.assertEqual(errors, [])
            self.assertEqual((summary.rows, summary.created, summary.updated), (4, 3, 1), batch)
            got = self.successResultOf(storage.subscribers.get("a@h"))
            self.assertEqual(got.amf, b"\x00\x01", batch)

    def test_extraFieldIsABadRow(self):
        storage, summary, errors = self.run_import(
            HEADER + row("a@h").rstrip("\n") + ",extra\n" + row("b@h"), 10)
        self.assertEqual(errors, ["f.csv:2: row: more fields than the header's 7"])
        self.assertEqual((summary.created, summary.bad), (1, 1))

    def test_exportPagesThroughEverything(self):
        text = HEADER + "".join(row("u%02d@h" % (i,), sqn="0000000000%02x" % (i,))
                                for i in range(7))
        storage, _, _ = self.run_import(text, 3)
        out = io.StringIO()
        self.assertEqual(self.successResultOf(
            export_subscribers(storage.subscribers, out, withKeys=True, page=2)), 7)
        self.assertEqual(out.getvalue(), text)
        out = io.StringIO()
        export_subscribers(storage.subscribers, out, page=3)
        self.assertNotIn(K, out.getvalue())
        self.assertNotIn(OPC, out.getvalue())
