"""TCP transport of the bridge: framed sockets, the loopback policy and the HMAC handshake of both sides.

Sockets use TCP_NODELAY (a 500 Hz command stream must not wait for Nagle's algorithm). Every frame a
:class:`FramedSocket` sends carries the next sequence number and ``time.monotonic_ns()``. The handshake
(server: :func:`start_server_handshake`, :func:`finish_server_handshake`; client: :func:`client_handshake`)
authenticates both sides when a secret is set and estimates the offset between the two monotonic clocks
(NTP-style, error at most half the round trip), so the server can date commands and the client can date
observations on its own clock.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
import socket
import time

from real.bridge.protocol import (
    MAC_SIZE,
    MAX_PAYLOAD,
    NONCE_SIZE,
    Auth,
    ErrorCode,
    ErrorMessage,
    Flag,
    Frame,
    FrameDecoder,
    Hello,
    MsgType,
    ProtocolError,
    Welcome,
    auth_mac,
    encode_frame,
)

RECV_CHUNK = 65536


class ConnectionClosedError(ConnectionError):
    """The peer closed the connection (EOF), or it was closed locally."""


class AuthenticationError(ConnectionError):
    """The HMAC handshake failed: wrong or missing secret on one side."""


class RemoteError(ConnectionError):
    """The peer sent an ERROR message; ``code`` is its :class:`ErrorCode`."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"peer error {code} ({_code_name(code)}): {text}")
        self.code = code
        self.text = text


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "UNKNOWN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or a name) resolves only to loopback addresses (127.0.0.0/8, ::1).

    The wildcard addresses ("", "0.0.0.0", "::") are not loopback: they listen on every interface.
    """
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def secret_bytes(secret: str | bytes | None) -> bytes:
    """The shared secret as bytes (UTF-8 for a str); empty when unset."""
    if secret is None:
        return b""
    return secret if isinstance(secret, bytes) else secret.encode()


class FramedSocket:
    """A connected TCP socket that sends and receives whole frames.

    Args:
        sock: a connected stream socket (TCP_NODELAY is set here).
        max_payload: the decoder's payload bound (bytes).
    """

    def __init__(self, sock: socket.socket, max_payload: int = MAX_PAYLOAD) -> None:
        self.sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(max_payload)
        self._seq = 0
        self.closed = False

    @property
    def peer(self) -> str:
        """The peer's address as ``host:port`` (or ``?`` once closed)."""
        try:
            host, port = self.sock.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"

    def send(self, msg_type: MsgType, payload: bytes = b"", flags: int = 0,
             timestamp_ns: int | None = None) -> tuple[int, int]:
        """Send one frame stamped ``timestamp_ns`` (default: ``time.monotonic_ns()`` now); returns ``(seq, stamp)``.

        Raises:
            ConnectionClosedError: the socket is closed. OSError: the send failed.
        """
        if self.closed:
            raise ConnectionClosedError("send on a closed connection")
        self._seq += 1
        stamp = time.monotonic_ns() if timestamp_ns is None else int(timestamp_ns)
        data = encode_frame(msg_type, self._seq, stamp, payload, flags)
        if self.sock.gettimeout() == 0.0:  # non-blocking (the server's event loop): never wait on a peer
            if self.sock.send(data) != len(data):
                raise ConnectionError(f"{self.peer} is not reading its replies (send buffer full)")
        else:
            self.sock.sendall(data)
        return self._seq, stamp

    def receive_available(self) -> list[Frame]:
        """For a readable non-blocking socket: read what arrived and return the complete frames (maybe none).

        Raises:
            ConnectionClosedError: the peer closed the connection.
            ProtocolError: a malformed frame (the caller should close the connection).
            OSError: the connection broke (e.g. reset by the peer).
        """
        try:
            data = self.sock.recv(RECV_CHUNK)
        except BlockingIOError:
            return []
        if not data:
            raise ConnectionClosedError(f"{self.peer} closed the connection")
        self.decoder.feed(data)
        return self.decoder.frames()

    def recv(self, timeout: float | None) -> Frame:
        """The next frame, waiting at most ``timeout`` seconds (``None``: forever).

        Raises:
            TimeoutError: nothing complete arrived in time.
            ConnectionClosedError: the peer closed the connection.
            ProtocolError: a malformed frame (the caller should close the connection).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            if self.closed:
                raise ConnectionClosedError("recv on a closed connection")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no frame from {self.peer} within {timeout:.3f} s")
                self.sock.settimeout(remaining)
            else:
                self.sock.settimeout(None)
            try:
                data = self.sock.recv(RECV_CHUNK)
            except TimeoutError:
                raise TimeoutError(f"no frame from {self.peer} within {timeout:.3f} s") from None
            if not data:
                raise ConnectionClosedError(f"{self.peer} closed the connection")
            self.decoder.feed(data)

    def send_error(self, code: ErrorCode, text: str) -> None:
        """Best effort: tell the peer why the connection is about to close."""
        try:
            self.send(MsgType.ERROR, ErrorMessage(int(code), text).encode())
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def expect(frame: Frame, msg_type: MsgType) -> Frame:
    """Return ``frame`` if it has type ``msg_type``.

    Raises:
        RemoteError: it is an ERROR message. ProtocolError: it is another type.
    """
    if frame.type == MsgType.ERROR and msg_type != MsgType.ERROR:
        message = ErrorMessage.decode(frame.payload)
        if message.code == ErrorCode.AUTH_FAILED:
            raise AuthenticationError(f"the server refused the handshake: {message.text}")
        raise RemoteError(message.code, message.text)
    if frame.type != msg_type:
        raise ProtocolError(f"expected {msg_type.name}, got {frame.type.name}")
    return frame


@dataclasses.dataclass(frozen=True)
class Session:
    """What a completed handshake established.

    ``clock_offset_ns`` is the peer's monotonic clock minus ours (ns): a peer time ``t`` is ``t - offset`` here.
    """

    clock_offset_ns: int
    info: dict


@dataclasses.dataclass(frozen=True)
class PendingHandshake:
    """The server's half of a handshake in progress: its nonce and when its HELLO left (ns)."""

    nonce: bytes
    hello_ns: int


def start_server_handshake(conn: FramedSocket, secret: bytes) -> PendingHandshake:
    """Server side, step 1: send HELLO with a fresh nonce (and the AUTH_REQUIRED flag when ``secret`` is set)."""
    nonce = os.urandom(NONCE_SIZE)
    _, hello_ns = conn.send(MsgType.HELLO, Hello(nonce, bool(secret)).encode(), int(Flag.AUTH_REQUIRED) if secret else 0)
    return PendingHandshake(nonce, hello_ns)


def finish_server_handshake(conn: FramedSocket, pending: PendingHandshake, frame: Frame, secret: bytes,
                            info: dict) -> Session:
    """Server side, step 2: check the client's AUTH frame and answer WELCOME with the server's proof and ``info``.

    Raises:
        AuthenticationError: the client's HMAC is wrong (an ERROR was sent to it first).
        ProtocolError: ``frame`` is not a well-formed AUTH.
    """
    received_ns = time.monotonic_ns()
    auth = Auth.decode(expect(frame, MsgType.AUTH).payload)
    if secret and not hmac.compare_digest(auth.mac, auth_mac(secret, b"client", pending.nonce, auth.nonce)):
        conn.send_error(ErrorCode.AUTH_FAILED, "authentication failed")
        raise AuthenticationError(f"client {conn.peer} failed the HMAC handshake")
    proof = auth_mac(secret, b"server", auth.nonce, pending.nonce) if secret else bytes(MAC_SIZE)
    conn.send(MsgType.WELCOME, Welcome(proof, info).encode())
    return Session(frame.timestamp_ns - (pending.hello_ns + received_ns) // 2, {})


def client_handshake(conn: FramedSocket, secret: bytes, timeout: float) -> Session:
    """Run the client side: read HELLO, send AUTH (HMAC when a secret is set), check WELCOME's proof.

    Raises:
        AuthenticationError: the server refused us, needs a secret we do not have, or failed to prove it knows ours.
        RemoteError, TimeoutError, ConnectionClosedError, ProtocolError: the server did not answer properly.
    """
    hello = Hello.decode(expect(conn.recv(timeout), MsgType.HELLO).payload)
    client_nonce = os.urandom(NONCE_SIZE)
    mac = auth_mac(secret, b"client", hello.nonce, client_nonce) if secret else bytes(MAC_SIZE)
    _, auth_ns = conn.send(MsgType.AUTH, Auth(client_nonce, mac).encode())
    try:
        frame = expect(conn.recv(timeout), MsgType.WELCOME)
    except ConnectionClosedError:
        if hello.auth_required and not secret:
            raise AuthenticationError("the server requires a shared secret and none is configured") from None
        raise
    received_ns = time.monotonic_ns()
    welcome = Welcome.decode(frame.payload)
    if secret and not hmac.compare_digest(welcome.mac, auth_mac(secret, b"server", client_nonce, hello.nonce)):
        raise AuthenticationError("the server could not prove it knows the shared secret")
    return Session(frame.timestamp_ns - (auth_ns + received_ns) // 2, welcome.info)
