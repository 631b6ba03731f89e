"""A gn_communicator whose collectives are a Python object's methods: how
gradnorm.torch hands torch.distributed groups to the C++ library.

The object has ``rank`` and ``size`` (ints) and the methods
``all_reduce(values: list[float], op: "sum" | "max") -> list[float]``,
``broadcast(values: list[float], root) -> list[float]``,
``broadcast_bytes(data: bytes, root) -> bytes`` (same length on every rank)
and ``barrier()``. NaN never reaches its max (the library carries it as a
flag). An exception becomes the callback's error: TimeoutError (or a message
saying "timed out") DEADLINE_EXCEEDED, ConnectionError UNAVAILABLE,
KeyboardInterrupt CANCELLED, anything else INTERNAL. The communicator is
unusable afterwards, as with any transport failure (``failed`` says so; make
a new one), and a KeyboardInterrupt or SystemExit is kept for the caller to
raise again once the library has returned (``raise_interrupt``).
"""

import ctypes

from gradnorm import _lib

_DEADLINE_EXCEEDED, _UNAVAILABLE, _INTERNAL, _CANCELLED = 4, 14, 13, 1
_OPS = {0: "sum", 1: "max"}


def _code_of(exc: BaseException) -> int:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return _CANCELLED
    if isinstance(exc, TimeoutError) or "timed out" in str(exc).lower():
        return _DEADLINE_EXCEEDED
    if isinstance(exc, ConnectionError) or "connection" in str(exc).lower():
        return _UNAVAILABLE
    return _INTERNAL


class Communicator:
    """Owns one gn_communicator over `impl`; close() (or garbage collection)
    destroys it."""

    _handle = None

    def __init__(self, impl):
        self.impl = impl
        self.failed = False
        self._interrupt = None
        self._handle = ctypes.c_void_p()

        def guarded(fn):
            def call(*args):
                try:
                    fn(*args)
                    return 0
                except BaseException as e:  # noqa: BLE001 (C cannot unwind)
                    # Nothing here may raise: ctypes would answer 0 (OK)
                    # with the values unreduced.
                    self.failed = True
                    if isinstance(e, (KeyboardInterrupt, SystemExit)):
                        self._interrupt = e
                    try:
                        message = f"{type(e).__name__}: {e}"
                    except BaseException:  # noqa: BLE001
                        message = type(e).__name__
                    _lib.lib.gn_set_callback_error(
                        message.encode(errors="replace"))
                    return _code_of(e)
            return call

        def all_reduce(_, values, n, op):
            out = impl.all_reduce(values[:n], _OPS[op])
            for i in range(n):
                values[i] = out[i]

        def broadcast(_, values, n, root):
            out = impl.broadcast(values[:n], root)
            for i in range(n):
                values[i] = out[i]

        def broadcast_bytes(_, data, n, root):
            out = impl.broadcast_bytes(ctypes.string_at(data, n), root)
            if len(out) != n:
                raise RuntimeError(
                    f"broadcast_bytes returned {len(out)} bytes; expected {n}")
            ctypes.memmove(data, out, n)

        def barrier(_):
            impl.barrier()

        # The ctypes function objects must live as long as the communicator.
        self._callbacks = _lib.gn_communicator_callbacks(
            None, int(impl.rank), int(impl.size),
            _lib.ALL_REDUCE(guarded(all_reduce)),
            _lib.BROADCAST(guarded(broadcast)),
            _lib.BROADCAST_BYTES(guarded(broadcast_bytes)),
            _lib.BARRIER(guarded(barrier)),
            _lib.RELEASE())
        _lib.check(_lib.lib.gn_communicator_create(
            ctypes.byref(self._callbacks), ctypes.byref(self._handle)))

    @property
    def handle(self):
        return self._handle

    def raise_interrupt(self):
        """Raises the KeyboardInterrupt or SystemExit a callback caught, if
        any (once)."""
        interrupt, self._interrupt = self._interrupt, None
        if interrupt is not None:
            raise interrupt

    def close(self):
        if self._handle:
            _lib.lib.gn_communicator_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        self.close()
