"""
One timer for all the SCF's timers: the 2xx retransmissions and their
64*T1 end (RFC 3261 13.3.1.4), the session timers (RFC 4028) and the
ended dialogs' expiry, kept in a heap under a single DelayedCall on the
injected reactor (docs/design.md: finished state keeps only what it needs)
instead of one DelayedCall per session. Each timer fires at its own time:
the DelayedCall always waits for the earliest.
"""

import heapq
from itertools import count
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["Sweep", "Timer"]

# a timer this close to its time is due: a DelayedCall moved with reset()
# may fire one rounding error early
_EPSILON = 1e-6


class Timer:
    """One scheduled call; C{cancel()} makes it a no-op (removed lazily)."""

    __slots__ = ("when", "fn", "args", "sweep")

    def __init__(self, when: float, fn: Callable[..., Any], args: Tuple[Any, ...],
                 sweep: "Sweep") -> None:
        self.when = when
        self.fn: Optional[Callable[..., Any]] = fn
        self.args = args
        self.sweep: Optional["Sweep"] = sweep

    def active(self) -> bool:
        return self.fn is not None

    def cancel(self) -> None:
        sweep = self.sweep
        if self.fn is None or sweep is None:
            return
        self.fn = None
        self.args = ()
        self.sweep = None
        sweep._cancelledOne()


class Sweep:
    """
    @param clock: the IReactorTime its one DelayedCall is scheduled on.
    """

    # rebuild the heap once cancelled timers are most of it
    COMPACT_AT = 64

    # an IReactorTime and its IDelayedCall (Any: zope interfaces are not types)
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._heap: List[Tuple[float, int, Timer]] = []
        self._order = count()
        self._cancelled = 0
        self.call: Any = None

    def __len__(self) -> int:
        """The timers still to fire."""
        return len(self._heap) - self._cancelled

    def callLater(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """As C{IReactorTime.callLater}: C{fn(*args)} in C{delay} seconds."""
        when = self.clock.seconds() + delay
        timer = Timer(when, fn, args, self)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if self._heap[0][2] is timer:
            self._arm()
        return timer

    def cancelAll(self) -> None:
        """Cancel every timer (the role stops): no DelayedCall is left."""
        for _, _, timer in self._heap:
            timer.fn, timer.args, timer.sweep = None, (), None
        self._heap = []
        self._cancelled = 0
        self._arm()

    def _cancelledOne(self) -> None:
        self._cancelled += 1
        if self._cancelled >= self.COMPACT_AT and 2 * self._cancelled > len(self._heap):
            self._heap = [e for e in self._heap if e[2].fn is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
        self._arm()

    def _drop(self) -> None:
        while self._heap and self._heap[0][2].fn is None:
            heapq.heappop(self._heap)
            self._cancelled -= 1

    def _arm(self) -> None:
        self._drop()
        call = self.call
        if not self._heap:
            if call is not None and call.active():
                call.cancel()
            self.call = None
            return
        when = self._heap[0][0]
        if call is not None and call.active():
            if call.getTime() != when:
                call.reset(max(0.0, when - self.clock.seconds()))
            return
        self.call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self.call = None
        heap = self._heap
        try:
            while heap and heap[0][0] <= self.clock.seconds() + _EPSILON:
                _, _, timer = heapq.heappop(heap)
                fn, args = timer.fn, timer.args
                if fn is None:
                    self._cancelled -= 1
                    continue
                timer.fn, timer.args, timer.sweep = None, (), None
                fn(*args)
        finally:
            self._arm()
