//! Handing a checked upstream connection to the relay, so that its bytes
//! cross one process (the relay) instead of two (the relay, then the host
//! proxy).
//!
//! The relay asks for it with a `Scriptbox-Handoff: fd` header on its
//! `CONNECT`. The proxy then answers as usual (`200`, then, after the
//! client's first message was checked and sent upstream, its verdict):
//! after the `200` head comes exactly one verdict byte:
//! - [`Verdict::HandedOff`], sent with the upstream socket's descriptor
//!   (`SCM_RIGHTS`); the relay then copies between the client and that
//!   socket itself, and keeps its Unix connection open until it is done;
//! - [`Verdict::Piped`]: the proxy relays the rest itself, as without the
//!   header;
//! - [`Verdict::Refused`]: what follows is for the client (a TLS alert or
//!   a `403`), then the proxy closes.
//!
//! Handing off gives away no power: the descriptor is a connection the
//! proxy already dialled to a checked address, after it checked the
//! first message, which is all it ever checks. The proxy keeps its own
//! copy and holds the connection to the run's limits from the kernel's
//! counters ([`tcp_counters`]): bytes both ways for `egress_bytes`, time
//! since the last data for the idle limit. When the relay's Unix
//! connection closes, the proxy shuts the socket down for every holder,
//! so a script that steals the descriptor gains nothing beyond it.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The request header a relay sends to ask for the upstream descriptor.
pub const HEADER: &str = "Scriptbox-Handoff";

/// The proxy's verdict on a handoff-capable tunnel, one byte after `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// The upstream descriptor comes with this byte.
    HandedOff = 0x01,
    /// The proxy relays the bytes itself.
    Piped = 0x02,
    /// The tunnel was refused; bytes for the client follow.
    Refused = 0x03,
}

impl Verdict {
    /// The verdict a byte stands for.
    pub fn from_byte(byte: u8) -> Option<Verdict> {
        match byte {
            0x01 => Some(Verdict::HandedOff),
            0x02 => Some(Verdict::Piped),
            0x03 => Some(Verdict::Refused),
            _ => None,
        }
    }
}

/// Sends the [`Verdict::HandedOff`] byte with `fd` over the Unix socket
/// `socket` (non-blocking: may return `WouldBlock`).
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let byte = [Verdict::HandedOff as u8];
    let sent = rustix::net::sendmsg(
        socket,
        &[io::IoSlice::new(&byte)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(io::Error::other("the verdict byte was not sent"))
    }
}

/// Receives bytes from the Unix socket `socket` (non-blocking) and the
/// descriptor that came with them, if any. A descriptor arrives with the
/// last byte returned: the kernel ends a read at a message that carries
/// one.
pub fn recv_with_fd(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        socket,
        &mut [io::IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            // More than one descriptor is not this protocol: keep the
            // first, the rest close as they drop.
            for received in fds {
                if fd.is_none() {
                    fd = Some(received);
                }
            }
        }
    }
    Ok((received.bytes, fd))
}

/// What the kernel counted on a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Payload bytes sent.
    pub sent: u64,
    /// Payload bytes received (and the peer's FIN, as one byte).
    pub received: u64,
    /// Time since the last data either way.
    pub idle: Duration,
}

/// Reads `TCP_INFO` from a TCP socket.
pub fn tcp_counters(socket: BorrowedFd<'_>) -> io::Result<TcpCounters> {
    // SAFETY: an all-zero tcp_info is a valid value (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and updates `len`; the descriptor is borrowed, so open.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Kernels older than 4.19 return a shorter struct without the sent
    // and retransmitted byte counters: refuse rather than report zeros.
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_retrans) + std::mem::size_of::<u64>();
    if (len as usize) < needed {
        return Err(io::Error::other(
            "this kernel's TCP_INFO has no byte counters (Linux 4.19 or newer needed)",
        ));
    }
    let idle_ms = info.tcpi_last_data_sent.min(info.tcpi_last_data_recv);
    Ok(TcpCounters {
        // Payload handed to the network once (retransmissions are the
        // same bytes again); unlike `bytes_acked`, no SYN or FIN in it.
        sent: info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans),
        // The peer's FIN, once it comes, counts as one byte here.
        received: info.tcpi_bytes_received,
        idle: Duration::from_millis(u64::from(idle_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_descriptor_crosses_with_its_verdict_byte_and_counters_count() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (proxy, relay) = UnixStream::pair().unwrap();
        (&proxy).write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        send_fd(proxy.as_fd(), upstream.as_fd()).unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        let fd = loop {
            let (n, fd) = recv_with_fd(relay.as_fd(), &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            if let Some(fd) = fd {
                break fd;
            }
        };
        assert_eq!(got.last().copied(), Some(Verdict::HandedOff as u8));
        assert_eq!(&got[..got.len() - 1], b"HTTP/1.1 200 OK\r\n\r\n");
        let mut handed = std::net::TcpStream::from(fd);
        handed.write_all(b"ping").unwrap();
        let mut four = [0u8; 4];
        server.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"ping");
        server.write_all(b"pong!").unwrap();
        let mut five = [0u8; 5];
        handed.read_exact(&mut five).unwrap();
        // The proxy's copy sees what the relay's copy moved.
        let counters = tcp_counters(upstream.as_fd()).unwrap();
        assert_eq!((counters.sent, counters.received), (4, 5), "{counters:?}");
        // Shutting down one copy cuts the connection for every holder.
        upstream.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(handed.read(&mut five).unwrap(), 0);
        assert_eq!(server.read(&mut five).unwrap(), 0);
    }
}
