"""Every contract of mbmsd, in one place.

A role, a storage backend or a metrics exporter is a plugin found with
C{twisted.plugin.getPlugins(I..., mbmsd.plugins)}; what a role needs from the
process comes through L{INode}; what it needs from storage comes through the
narrow stores of L{IStorage}. Every provider is checked with
C{zope.interface.verify.verifyObject} in tests/unit/test_interfaces.py.

Every store method returns a Deferred; the docstring says what it fires with.
Records (Subscriber, BootstrapSession, ...) are the frozen dataclasses of
L{mbmsd.storage.records}."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    # types only: the contracts import nothing at run time
    from prometheus_client import CollectorRegistry
    from twisted.application.service import IService
    from twisted.internet.defer import Deferred

    from mbmsd.protocols.mbms_xml import NafKeyInfo
    from mbmsd.roles.bmsc.keymanagement import KmAnswer
    from mbmsd.sip.message import Request, Response
    from mbmsd.storage.records import (
        Authorization,
        BootstrapSession,
        Challenge,
        MbmsService,
        Msk,
        MskRegistration,
        NafKey,
        Subscriber,
        SubscriberState,
        SubscriberSummary,
    )
    from mbmsd.storage.sipreg import SipBinding
    from mbmsd.tls import Peer

# a validated config table
Config = dict[str, Any]


# ---------------------------------------------------------------- plugins


class IRoleFactory(IPlugin):
    """A role (bsf, pcscf, scf, bmsc) that a node can run."""

    name = Attribute("The role's name as written in node.roles, e.g. 'bsf'.")
    description = Attribute("One line for humans.")
    configSchema = Attribute(
        "The L{mbmsd.config.Section} that validates this role's config table "
        "(the table named after the role)."
    )
    startOrder = Attribute(
        "An int: roles start in ascending order and stop in reverse "
        "(the SIP edge starts last and stops first)."
    )
    liveKeys = Attribute(
        "A frozenset of the keys of the role's table that a reload (SIGHUP) "
        "may change while the node runs (trusted peers, overload limits, "
        "TLS files, ...): the role's service then provides L{IReconfigurable}. "
        "A change of any other key needs a restart, and the reload is refused."
    )

    def checkNode(config: Config) -> list[str]:
        """Checks that need the whole node config (other roles, subscribers).
        @param config: the validated node config (a dict).
        @return: a list of error lines C{"<key path>: <problem>"}; empty when fine."""

    def makeService(node: INode, config: Config) -> IService:
        """Build the role.
        @param node: the L{INode} the role runs in.
        @param config: the validated config table of the role (a dict).
        @return: an L{IService}; the node starts it once storage is ready."""


class IStorageFactory(IPlugin):
    """A storage backend chosen by C{storage.backend}."""

    name = Attribute("The backend's name, e.g. 'sqlite'.")
    configSchema = Attribute("The L{mbmsd.config.Section} for its keys in [storage].")

    def open(config: Config, reactor: Any) -> IStorage:
        """Create (not yet open) the storage.
        @param config: the validated [storage] table.
        @param reactor: the reactor (IReactorThreads and IReactorTime).
        @return: an L{IStorage}."""


class IMetricsExporterFactory(IPlugin):
    """A metrics exporter chosen by C{metrics.exporters}."""

    name = Attribute("The exporter's name, e.g. 'prometheus'.")
    configSchema = Attribute("The L{mbmsd.config.Section} for [metrics.<name>].")

    def makeService(config: Config, registry: CollectorRegistry, reactor: Any) -> IService:
        """@param config: the validated [metrics.<name>] table.
        @param registry: the node's C{prometheus_client.CollectorRegistry}.
        @return: an L{IService} that exposes or pushes the registry."""


class IHealthExporterFactory(IMetricsExporterFactory):
    """An exporter whose listener also answers the node's health probes
    (C{GET /healthz}, C{GET /readyz})."""

    # the node passes such an exporter the health too: a wider signature
    # than its base's, by design
    def makeService(  # type: ignore[override]
        config: Config, registry: CollectorRegistry, reactor: Any, health: IHealth,
    ) -> IService:
        """Like L{IMetricsExporterFactory.makeService}.
        @param health: the node's L{IHealth}."""


# ---------------------------------------------------------------- node


class IReconfigurable(Interface):
    """A role service that takes a new config while it runs (a reload, SIGHUP;
    L{mbmsd.reload}). The node validates the whole new config, refuses it
    when a key outside the roles' C{liveKeys} changed, then asks every role
    to prepare, and applies only when every role prepared: nothing is half
    applied."""

    def prepareReconfigure(config: Config) -> Callable[[], None]:
        """Build what the role's new config table needs (TLS contexts from the
        files, read again even when their paths are the same: a renewed
        certificate; new peer sets) without changing the running role.
        Asked on every reload, also when the role's table did not change.
        @param config: the role's new validated config table (a dict); only
            keys of the factory's C{liveKeys} differ from the running one.
        @return: a callable without arguments that applies it; it must not
            fail (everything that can fail happens here).
        @raise mbmsd.errors.ReloadRefused: the reload is refused; the
            message is one line naming the key."""


class IDrainable(Interface):
    """A role service with work to end before the node's listeners close (the
    SCF's sessions: a BYE goes out through the P-CSCF, a deauthorize to the
    BM-SC). On a clean stop the node drains every started role that
    provides this, last started first, while every role still serves, and
    only then stops the roles in reverse start order."""

    def drain() -> Deferred[object]:
        """End the work that needs the other roles (no new work is refused:
        the role still serves until its stopService).
        @return: a Deferred firing when done. The node waits for it at most
            C{node.stop_grace} seconds (then cancels it and stops anyway);
            a failure is logged, and the stop goes on."""


class INode(Interface):
    """What a role may ask of the process it runs in."""

    name = Attribute("The node's name (a metric label and a log prefix).")
    homeDomain = Attribute("The home network domain, e.g. 'home1.net'.")
    reactor = Attribute(
        "The reactor: IReactorTime (the one clock every role uses), "
        "IReactorTCP, IReactorUDP."
    )
    storage = Attribute("The node's L{IStorage}.")
    metrics = Attribute("The node's L{mbmsd.metrics.Metrics} facade.")
    config = Attribute("The whole validated node config (a dict).")
    http = Attribute(
        "The node's pooled HTTP client, an L{mbmsd.httpclient.HttpClient}: "
        "C{request(method, url, headers=None, body=None, timeout=None, "
        "retries=None)} -> Deferred of C{(code, headers, body)}; fails with "
        "L{mbmsd.httpclient.HttpTimeout} / L{HttpUnavailable} / L{HttpError}. "
        "Closed by the node after its roles stopped."
    )

    def provide(interface: type[Interface], provider: object) -> None:
        """Offer an in-process port (for example Zn, L{IBootstrapLookup}) to the
        roles that start after this one."""

    def lookup(interface: type[Interface]) -> Any:
        """@return: the provider offered for C{interface}, or None."""


class IHealth(Interface):
    """The node's liveness and readiness (L{mbmsd.health}), offered to the
    roles through C{INode.lookup(IHealth)}."""

    def addCheck(name: str, check: Callable[[], Deferred[object]]) -> None:
        """Add a readiness condition.
        @param name: its key in the C{/readyz} answer, e.g. C{"bmsc.zn"}.
        @param check: a callable without arguments returning a Deferred that
            fires when the condition holds and fails (its exception's class
            and message are the reason) when it does not."""

    def check() -> Deferred[tuple[bool, dict[str, str]]]:
        """Evaluate every condition now (every role started, storage, the
        added checks), each bounded in time.
        @return: Deferred firing with C{(ready, reasons)}: a bool and
            C{{name: "ok" or a short reason}}; it never fails."""


# ---------------------------------------------------------------- storage


class IStorage(Interface):
    """A storage backend: one schema, versioned migrations, typed stores."""

    subscribers = Attribute("The L{ISubscriberStore}.")
    bootstrap = Attribute("The L{IBootstrapStore}.")
    bmsc = Attribute("The L{IBmscStore}.")
    sipRegistrations = Attribute("The L{ISipRegistrationStore} (P-CSCF).")
    leases = Attribute("The L{ILeaseStore}: singleton duties shared by nodes.")
    provisioning = Attribute("The L{IProvisioningStore}: services and subscriptions.")

    def open() -> Deferred[None]:
        """Open the backend and apply pending schema migrations.
        @return: a Deferred that fires with None when the stores are usable,
            or fails (the node then does not start)."""

    def close() -> Deferred[None]:
        """Release connections. @return: a Deferred firing when done."""

    def ping() -> Deferred[None]:
        """One trivial round trip to the backend, never retried (readiness).
        @return: a Deferred firing with None when the backend answered, or
            failing with the backend's error."""


class ISubscriberStore(Interface):
    """The subscriber data an HSS would hold (Zh stands in-process)."""

    def provision(subscriber: Subscriber) -> Deferred[None]:
        """Create or update a L{Subscriber} from configuration. K, OPc, AMF and
        IMPUs are replaced; a stored SQN is kept when it is ahead of the
        provisioned one (SQN never goes back, TS 33.102 C.1).
        @return: Deferred firing with None."""

    def get(impi: str) -> Deferred[Subscriber | None]:
        """@return: Deferred firing with the L{Subscriber} or None if unknown."""

    def create(subscriber: Subscriber) -> Deferred[bool]:
        """Store a new L{Subscriber}, as L{provision} would.
        @return: Deferred firing with True, or False (nothing changed) when
            the IMPI is already stored."""

    def update(subscriber: Subscriber) -> Deferred[bool]:
        """Replace a stored subscriber's IMPUs, K, OPc and AMF as L{provision}
        does (a stored SQN ahead is kept).
        @return: Deferred firing with True, or False for an unknown IMPI."""

    def remove(impi: str) -> Deferred[bool]:
        """@return: Deferred firing with True if the subscriber was removed,
            False if it was unknown."""

    def page(
        after: str | None, limit: int, withKeys: bool = False,
    ) -> Deferred[list[SubscriberSummary] | list[Subscriber]]:
        """A page of subscribers in IMPI order, without their keys.
        @param after: the last IMPI of the previous page ('' or None: from
            the start).
        @param withKeys: give whole L{Subscriber}s, K and OPc included (an
            export with keys), instead.
        @return: Deferred firing with at most C{limit}
            L{mbmsd.storage.records.SubscriberSummary}s whose IMPI sorts
            after C{after}."""

    def provisionBatch(
        subscribers: Iterable[Subscriber],
    ) -> Deferred[tuple[int, int, int]]:
        """Provision many L{Subscriber}s in one transaction, as L{provision}
        does each; a subscriber whose stored data is the same (and whose
        stored SQN is not behind) is not written.
        @return: Deferred firing with C{(created, updated, unchanged)}."""

    def nextSqn(impi: str) -> Deferred[int | None]:
        """Atomically advance the subscriber's SQN by one and return it.
        @return: Deferred firing with the new SQN (int), or None if the IMPI
            is unknown."""

    def resynchronise(impi: str, sqnMs: int) -> Deferred[None]:
        """Set the subscriber's SQN to C{sqnMs} (from a verified AUTS, TS 33.102
        6.3.5) so that the next vector uses SQN_MS + 1.
        @return: Deferred firing with None."""


class IProvisioningStore(Interface):
    """What operators provision beside the subscribers, read by every node at
    each request (no cache): the MBMS User Services (L{MbmsService}) and the
    subscriptions, IMPU -> MBMS User Service IDs (TS 26.237 8.3.2.4). IMPUs
    are in the SCF's normalized form. Reached as C{storage.provisioning}."""

    def addService(service: MbmsService) -> Deferred[bool]:
        """Store a new L{mbmsd.storage.records.MbmsService}.
        @return: Deferred firing with True, or False (nothing changed) when
            its ID is already stored."""

    def putService(service: MbmsService) -> Deferred[None]:
        """Create or replace a service. @return: Deferred firing with None."""

    def getService(serviceId: str) -> Deferred[MbmsService | None]:
        """@return: Deferred firing with the L{MbmsService} or None."""

    def services() -> Deferred[list[MbmsService]]:
        """@return: Deferred firing with every L{MbmsService}, by ID."""

    def removeService(serviceId: str) -> Deferred[bool]:
        """Remove a service and every subscription to it.
        @return: Deferred firing with True, or False if it was unknown."""

    def setSubscriptions(impu: str, serviceIds: Iterable[str]) -> Deferred[None]:
        """Replace the services C{impu} is subscribed to (none: unsubscribed).
        @return: Deferred firing with None."""

    def subscriptions(impu: str) -> Deferred[list[str]]:
        """@return: Deferred firing with the sorted list of service IDs."""

    def isSubscribed(impu: str, serviceId: str) -> Deferred[bool]:
        """@return: Deferred firing with True or False."""

    def subscriberState(impi: str, now: float) -> Deferred[SubscriberState | None]:
        """An operator's live view of one subscriber, nothing secret in it.
        @return: Deferred firing with a
            L{mbmsd.storage.records.SubscriberState} (live at C{now}: its
            bootstrapping sessions as L{SessionSummary}s, its P-CSCF
            L{SipBinding}s by IMPI, and the BM-SC's authorizations and MSK
            registrations of its IMPUs), or None for an unknown IMPI."""


class IBootstrapStore(Interface):
    """GBA state of the BSF: outstanding Ub challenges and bootstrapping sessions."""

    def putChallenge(challenge: Challenge) -> Deferred[None]:
        """Store an outstanding L{Challenge}, keyed by its nonce.
        @return: Deferred firing with None."""

    def issueChallenge(
        impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        """In one transaction: advance the subscriber's SQN (as
        L{ISubscriberStore.nextSqn} does), call C{challengeFor(subscriber)}
        with the subscriber record carrying that new SQN (a pure function:
        no I/O; it computes the authentication vector) and store the
        L{Challenge} it returns. The SQN and the challenge are durable
        together before the Deferred fires, or neither is.
        @return: Deferred firing with the L{Challenge}, or None for an
            unknown IMPI (nothing changed)."""

    def takeChallenge(
        nonce: str,
        sessionFor: Callable[[Challenge], BootstrapSession | None] | None = None,
    ) -> Deferred[Challenge | None]:
        """Remove and return the challenge for C{nonce}; a nonce answers once.
        With C{sessionFor}, in the same transaction: call
        C{sessionFor(challenge)} (a pure function, not called when the nonce
        is unknown) and store the L{BootstrapSession} it returns, if any, as
        L{putSession} would; durable before the Deferred fires.
        @return: Deferred firing with the L{Challenge}, or None if unknown or
            already used."""

    def putSession(session: BootstrapSession) -> Deferred[None]:
        """Store a L{BootstrapSession} (replacing one with the same B-TID).
        @return: Deferred firing with None once durable."""

    def getSession(btid: str) -> Deferred[BootstrapSession | None]:
        """@return: Deferred firing with the L{BootstrapSession} or None."""

    def prune(now: float) -> Deferred[int]:
        """Delete sessions and challenges that expired at or before C{now}
        (POSIX seconds).
        @return: Deferred firing with the number of rows removed."""


class IBmscStore(Interface):
    """The BM-SC.UPF's state (TS 26.237 10.2.4, TS 33.246 6.3): the SCF's
    authorizations, the UEs' MSK registrations, the MSKs, and the MIKEY
    replay counter of each MUK."""

    def putAuthorization(authorization: Authorization) -> Deferred[None]:
        """Store an L{Authorization} (replacing the one for the same IMPU and
        MBMS User Service ID). @return: Deferred firing with None once durable."""

    def getAuthorization(impu: str, serviceId: str) -> Deferred[Authorization | None]:
        """@return: Deferred firing with the L{Authorization} or None."""

    def removeAuthorization(impu: str, serviceId: str) -> Deferred[bool]:
        """Remove the authorization and the MSK registration it allowed.
        @return: Deferred firing with True if an authorization was removed."""

    def putRegistration(registration: MskRegistration) -> Deferred[None]:
        """Store an L{MskRegistration} (replacing the one for the same IMPU and
        service). @return: Deferred firing with None once durable."""

    def putSipAuthorization(
        authorization: Authorization, registration: MskRegistration,
    ) -> Deferred[MskRegistration | None]:
        """The SIP-based procedure (TS 26.237 Annex I.2): store an
        L{Authorization} and the L{MskRegistration} the SCF made with it
        (carrying the MUK) in one transaction, each replacing the one for
        the same IMPU and service.
        @return: Deferred firing with the registration it replaced (None
            when there was none) once both are durable."""

    def removeRegistration(impu: str, serviceId: str) -> Deferred[bool]:
        """@return: Deferred firing with True if a registration was removed."""

    def registrationsFor(
        serviceId: str, shard: int = 0, shards: int = 1,
    ) -> Deferred[list[MskRegistration]]:
        """The registrations of a service, or of one of its MSK rotation shards
        (L{mbmsd.storage.records.rotation_shard} of the IMPU is C{shard}).
        @return: Deferred firing with the list of L{MskRegistration}s, by IMPU."""

    def getRegistration(impu: str, serviceId: str) -> Deferred[MskRegistration | None]:
        """@return: Deferred firing with the L{MskRegistration} or None."""

    def putMsk(msk: Msk) -> Deferred[None]:
        """Store a new L{Msk}. @return: Deferred firing with None once durable."""

    def currentMsk(serviceId: str, now: float) -> Deferred[Msk | None]:
        """@return: Deferred firing with the newest L{Msk} of the service still
            valid at C{now}, or None."""

    def getMsk(keyDomainId: bytes, mskId: bytes) -> Deferred[Msk | None]:
        """@return: Deferred firing with the L{Msk} or None."""

    def lastMskNumber(serviceId: str) -> Deferred[int | None]:
        """@return: Deferred firing with the highest MSK ID of the service (an
            int) or None when it has none yet."""

    def nextCounter(mukId: str) -> Deferred[int]:
        """Atomically advance and return the MIKEY timestamp COUNTER of a MUK
        (TS 33.246: the UE rejects a counter that does not grow), starting at 1.
        @return: Deferred firing with the new counter (int)."""

    def reserveCounters(counts: Mapping[str, int]) -> Deferred[dict[str, int]]:
        """Reserve a block of MIKEY COUNTERs for each of several MUKs in one
        atomic step: each MUK's counter advances by its count (>= 1), and
        the caller owns the values C{last - count + 1 .. last}. The new
        values are durable before the Deferred fires, so a counter handed
        out from a block never goes back, even after a restart (unused
        values of a block are simply skipped).
        @param counts: {MUK ID: count}.
        @return: Deferred firing with {MUK ID: last value reserved}."""

    def prune(now: float) -> Deferred[int]:
        """Remove authorizations and MSK registrations that expired at or before
        C{now}, and MSKs expired more than a day before.
        @return: Deferred firing with the number of rows removed."""


class ILeaseStore(Interface):
    """Leases on singleton duties (the MSK rotation of a service): among the
    nodes sharing one database, at most one holds a lease at a time, until
    it expires. Times are POSIX seconds of the caller's clock, so the nodes'
    clocks must agree (NTP) to well within a lease's duration."""

    def acquire(name: str, holder: str, now: float, duration: float) -> Deferred[bool]:
        """Take the lease C{name} for C{holder} until C{now + duration}, or
        renew it when C{holder} already holds it. It is taken only when
        free: no holder, or the last one's lease expired at or before
        C{now}. Atomic across nodes.
        @return: Deferred firing with True when C{holder} now holds the
            lease, False when another holder's lease is still running."""

    def release(name: str, holder: str) -> Deferred[bool]:
        """Give the lease up (a clean stop), so another node takes it at once
        instead of after it expires. Does nothing unless C{holder} holds it.
        @return: Deferred firing with True when a lease was released."""

    def holder(name: str, now: float) -> Deferred[str | None]:
        """@return: Deferred firing with the holder (str) of lease C{name} still
            running at C{now}, or None."""

    def holders(prefix: str, now: float) -> Deferred[list[str]]:
        """@return: Deferred firing with the sorted distinct holders (str) of
            the leases named C{prefix}... still running at C{now}."""

    def mark(name: str, value: str) -> Deferred[None]:
        """Keep C{value} (str) for lease C{name}, whoever holds it, so the next
        holder reads what the last one did (the MSK ID a rotation shard
        pushed last). @return: Deferred firing when stored."""

    def markIfAbsent(name: str, value: str) -> Deferred[None]:
        """Like L{mark}, unless lease C{name} has a value already (atomic).
        @return: Deferred firing when done."""

    def marked(name: str) -> Deferred[str | None]:
        """@return: Deferred firing with the value kept for lease C{name}, or None."""


# ---------------------------------------------------------------- ports


class IBootstrapLookup(Interface):
    """Zn: what a NAF asks the BSF (TS 33.220 4.5.3, docs/design.md 7.6)."""

    def getNafKey(btid: str, nafId: bytes, peer: str | Peer | None) -> Deferred[NafKey]:
        """@param btid: the B-TID the UE presented.
        @param nafId: NAF_Id bytes (NAF FQDN || Ua security protocol id).
        @param peer: the asking NAF, for authorisation: its IP address
            (str) or a L{mbmsd.tls.Peer} (address and the names of its
            verified TLS client certificate); None for a NAF role of the
            same node, in-process.
        @return: Deferred firing with a L{mbmsd.storage.records.NafKey};
            fails with L{mbmsd.errors.UnknownBTID} or
            L{mbmsd.errors.NafNotAuthorized}."""


# ---------------------------------------------------------------- SIP


class ISipTransport(Interface):
    """Something that sends SIP messages: a UDP socket, one TCP connection, or
    an in-process hop. The transaction layer only ever calls C{send}."""

    name = Attribute("The Via transport token: 'UDP', 'TCP', 'TLS'.")
    reliable = Attribute(
        "True for stream transports (TCP, TLS): transactions then skip "
        "retransmissions and wait-states (RFC 3261 17).")

    def send(message: Request | Response, address: tuple[str, int] | None) -> None:
        """Serialize and send C{message} (a Request or Response) to C{address},
        a C{(host, port)} tuple. A connection-bound transport may ignore the
        address. Returns None; raises an exception when the message cannot be
        handed to the network (the transaction reports a transport error)."""


class ITransactionUser(Interface):
    """The transaction user (a UAS core, a proxy core): what the transaction
    layer hands up (RFC 3261 17)."""

    def requestReceived(request: Request, transaction: Any) -> None:
        """A new request (not a retransmission) arrived. C{transaction} is the
        server transaction created for it: answer with
        C{transaction.respond(response)}. Returns None."""

    def ackReceived(
        request: Request, transport: ISipTransport, source: tuple[str, int],
    ) -> None:
        """An ACK that matches no server transaction (the ACK of a 2xx, RFC 3261
        13.3.1.4 / 17.2.3), or one passed up by an INVITE server transaction
        in its Accepted state. C{source} is the C{(host, port)} it came from.
        Returns None."""

    def strayResponseReceived(
        response: Response, transport: ISipTransport, source: tuple[str, int],
    ) -> None:
        """A response that matches no client transaction (for example a
        retransmitted 2xx after the transaction ended; a proxy forwards it
        statelessly, RFC 3261 16.7 / RFC 6026). Returns None."""

    def transactionFailed(transaction: Any, reason: str) -> None:
        """A server transaction ended without delivering its response:
        C{reason} is 'timeout' (Timer H: no ACK for a non-2xx final response)
        or 'transport' (the response could not be sent, RFC 3261 17.2.4).
        Returns None."""


class IClientTransactionUser(Interface):
    """Who sent a request through a client transaction."""

    def responseReceived(response: Response, transaction: Any) -> None:
        """A response for the request: each provisional, the final one, and in
        the INVITE 'Accepted' state every 2xx retransmission (RFC 6026).
        Timeouts arrive as a locally generated 408 and transport errors as a
        locally generated 503 (C{response.local} is True for both).
        Returns None."""


# ---- P-CSCF


class ISipRegistrationStore(Interface):
    """The P-CSCF's registrar state (TS 24.229 5.2.2, RFC 3261 10.3): the
    outstanding REGISTER challenges (Digest AKA, keyed by nonce) and the
    bindings of registered public identities. Records are
    L{mbmsd.storage.sipreg.SipBinding} and L{mbmsd.storage.records.Challenge}.
    Reached as C{storage.sipRegistrations}."""

    def putChallenge(challenge: Challenge) -> Deferred[None]:
        """Store an outstanding REGISTER L{Challenge}, keyed by its nonce.
        @return: Deferred firing with None."""

    def issueChallenge(
        impi: str, challengeFor: Callable[[Subscriber], Challenge],
    ) -> Deferred[Challenge | None]:
        """In one transaction, as L{IBootstrapStore.issueChallenge}: advance
        the subscriber's SQN, call C{challengeFor(subscriber)} (pure) and
        store the L{Challenge} it returns; both durable, or neither.
        @return: Deferred firing with the L{Challenge}, or None for an
            unknown IMPI (nothing changed)."""

    def takeChallenge(nonce: str) -> Deferred[Challenge | None]:
        """Remove and return the challenge for C{nonce}; a nonce answers once
        (a replayed nonce finds nothing).
        @return: Deferred firing with the L{Challenge}, or None if unknown or
            already used."""

    def putBinding(binding: SipBinding) -> Deferred[None]:
        """Create or replace the L{SipBinding} of C{(binding.impu,
        binding.contact)}.
        @return: Deferred firing with None once durable."""

    def getBinding(impu: str, contact: str) -> Deferred[SipBinding | None]:
        """@return: Deferred firing with the L{SipBinding} of C{(impu, contact)}
            (expired or not), or None."""

    def removeBinding(impu: str, contact: str) -> Deferred[int]:
        """Remove the binding of C{(impu, contact)} (de-registration).
        @return: Deferred firing with the number of rows removed (0 or 1)."""

    def removeBindings(impu: str) -> Deferred[int]:
        """Remove every binding of C{impu} (C{Contact: *}, RFC 3261 10.2.2).
        @return: Deferred firing with the number of rows removed."""

    def bindings(impu: str, now: float) -> Deferred[list[SipBinding]]:
        """@return: Deferred firing with the list of live bindings of C{impu}
            (C{expires > now}), oldest registration first."""

    def bindingsFromSource(
        transport: str, host: str, port: int, now: float,
    ) -> Deferred[list[SipBinding]]:
        """The live bindings registered from one network path: what the P-CSCF
        checks an initial request against (the source is the identity, not
        the headers the UE wrote).
        @param transport: 'UDP' or 'TCP' (upper case).
        @return: Deferred firing with the list of live L{SipBinding}s whose
            source is C{(transport, host, port)}, oldest registration first."""

    def liveBindings(now: float) -> Deferred[list[SipBinding]]:
        """Every live binding (C{expires > now}): what the P-CSCF loads into
        memory at start (L{mbmsd.roles.pcscf.bindings}).
        @return: Deferred firing with the list of live L{SipBinding}s, oldest
            registration first."""

    def countBindings(now: float) -> Deferred[int]:
        """@return: Deferred firing with the number of live bindings."""

    def prune(now: float) -> Deferred[int]:
        """Delete bindings and challenges that expired at or before C{now}
        (POSIX seconds).
        @return: Deferred firing with the number of rows removed."""


# ---- SCF


class IServiceAuthorizationClient(Interface):
    """The SCF's port to the BM-SC.UPF (TS 26.237 10.2.3, docs/design.md 7.4): the
    HTTP POST C{/keymanagement?requesttype=authorize|deauthorize} with
    C{X-3GPP-Asserted-Identity} (a split deployment), or, with
    C{scf.bmsc_url = "local"}, the L{IServiceAuthorization} of the bmsc role
    of the same node, in-process; the same outcomes either way."""

    def authorize(
        impu: str, serviceIds: Sequence[str], ueAddress: str, lifetime: int | None,
        keyInfo: NafKeyInfo | None = None,
    ) -> Deferred[list[tuple[str, int]]]:
        """Tell the BM-SC that C{impu} may receive the keys of C{serviceIds}
        at C{ueAddress}, and wait for its acknowledgement.
        @param impu: the user's IMPU (from P-Asserted-Identity), a str.
        @param serviceIds: list of MBMS User Service IDs.
        @param ueAddress: the UE's IP address (str) from the INVITE's Contact.
        @param lifetime: seconds the BM-SC keeps the authorization (int), or
            None for the BM-SC's default.
        @param keyInfo: the SIP-based security procedure (TS 26.237 Annex
            I.2): a L{mbmsd.protocols.mbms_xml.NafKeyInfo} with the SCF's
            Ks_NAF for the UE's B-TID, sent in the same request; the BM-SC
            then pushes the MSKs under it without a Ua registration.
        @return: Deferred firing with C{[(serviceId, status)]}, the BM-SC's
            per-service status (200 stored, 404 unknown service, ...); fails
            with L{mbmsd.roles.scf.bmsc.BmscUnavailable} when the BM-SC did
            not answer within the configured time (SIP 504), or
            L{mbmsd.roles.scf.bmsc.BmscRefused} when it answered with
            anything but 200 and a well-formed acknowledgement (its
            C{code} attribute holds the HTTP status, 0 for a malformed one)."""

    def deauthorize(
        impu: str, serviceIds: Sequence[str], ueAddress: str,
    ) -> Deferred[list[tuple[str, int]]]:
        """Withdraw the authorization (the session ended: BYE, CANCEL, session
        timer).
        @return: Deferred firing with C{[(serviceId, status)]}; fails like
            L{authorize}."""


class IServiceAuthorization(Interface):
    """The BM-SC.UPF's side of the SCF's authorize and deauthorize, offered
    in-process (C{INode.provide}) by the bmsc role to the SCF of the same
    node (C{scf.bmsc_url = "local"}): the key management procedure of the
    HTTP path (TS 26.237 10.2.3, 10.2.4; Annex I.2 with C{keyInfo}) without
    HTTP or XML, with its checks, storage, metrics
    (C{mbmsd_bmsc_requests_total}, C{mbmsd_bmsc_request_seconds}, the same
    series) and log line. The caller is trusted implicitly: it runs in the
    node's process from the node's config, where over HTTP the SCF must be
    in C{bmsc.trusted_scfs} or C{bmsc.trusted_scf_names}.

    Each method returns a Deferred that never fails: it fires with a
    L{mbmsd.roles.bmsc.keymanagement.KmAnswer} whose C{code} is the HTTP
    status the same request gets over HTTP (200; 400 for a malformed IMPU,
    address, service list, lifetime or key information; 503 when storage
    failed), C{reason} the text logged, and C{statuses} the acknowledgement
    C{[(serviceId, status)]} (200 stored, 404 unknown service) when C{code}
    is 200, else None."""

    def authorize(
        impu: str, serviceIds: Sequence[str], ueAddress: str, lifetime: int | None,
        keyInfo: NafKeyInfo | None = None,
    ) -> Deferred[KmAnswer]:
        """Store the authorization of C{impu} for C{serviceIds} at C{ueAddress}
        for C{lifetime} seconds (None: C{bmsc.authorization_lifetime}); with
        C{keyInfo} (a L{mbmsd.protocols.mbms_xml.NafKeyInfo}) the MUK too, and
        push the current MSKs under it after the answer.
        @return: Deferred firing with the L{KmAnswer} (see the interface)."""

    def deauthorize(impu: str, serviceIds: Sequence[str], ueAddress: str) -> Deferred[KmAnswer]:
        """Remove the authorization (and a SIP-based registration) of C{impu}
        for C{serviceIds}.
        @return: Deferred firing with the L{KmAnswer} (see the interface)."""


# ---- BM-SC


class IMskPush(Interface):
    """The BM-SC's delivery of an MSK to one registered UE: an MSK message by
    MIKEY over UDP under the UE's MUK (TS 33.246 6.3.2.3.1), retransmitted
    until the UE verifies it. What key management and the MSK rotation are
    given at construction (L{mbmsd.roles.bmsc.delivery.MskPush})."""

    def pushMsk(registration: MskRegistration, msk: Msk) -> Deferred[bool]:
        """@param registration: the UE's L{mbmsd.storage.records.MskRegistration}
            (its address, B-TID, and the MUK or the Ua id that gives it).
        @param msk: the L{mbmsd.storage.records.Msk} to deliver.
        @return: Deferred firing with True once the UE verified the
            message, False when it was not sent (no MUK) or given up."""


# ---- BM-SC streaming (RFC 4563 2 and 7, RFC 3711)


class IBearer(Interface):
    """The MBMS bearer of one streaming service as the BM-SC sends on it: a UDP
    destination (multicast group, or a unicast address in tests) with a port
    for the SRTP packets and one for the MTK messages."""

    def sendMedia(packets: Sequence[bytes]) -> int:
        """Send SRTP packets (a list of bytes, at most 64 and 65 507 octets in
        all: one reactor iteration's), in order, one datagram each, to the
        bearer's media port.
        @return: how many were handed to the network; the others failed
            (counted by the caller, never raised)."""

    def sendKey(message: bytes) -> bool:
        """Send one MTK message (bytes) to the bearer's key port.
        @return: True when the datagram was handed to the network, False
            when the send failed (counted by the caller, never raised)."""


class IMediaSink(Interface):
    """Where the UE puts the RTP packets it decrypted (re-emitted to a player,
    or written to a file)."""

    def deliver(packet: bytes) -> None:
        """Take one plain RTP packet (bytes). @return: None."""

    def close() -> None:
        """Flush and release. @return: None."""
