//! Published ports: the host side bound before the app's network namespace exists,
//! `lo` brought up inside it, and the forwarder that relays each connection (TCP) or
//! datagram (UDP) to the app once it listens.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use crate::runtime::process::{setup, ProcessError};

/// A published port's host side, bound before leaving the host's network namespace.
pub(super) enum HostSocket {
    /// Bound, not yet listening (it starts listening once the app does).
    Tcp(OwnedFd, u16),
    Udp(std::net::UdpSocket, u16),
}

pub(super) fn bind_tcp(addr: SocketAddr) -> Result<OwnedFd, ProcessError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(setup(format!("cannot bind tcp {addr}")))?;
    Ok(fd)
}

/// `ip link set lo up`, as one rtnetlink request.
pub(super) fn loopback_up() -> nix::Result<()> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        socket::SockProtocol::NetlinkRoute,
    )?;
    socket::bind(fd.as_raw_fd(), &socket::NetlinkAddr::new(0, 0))?;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    const IFF_UP: u32 = 1;
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    socket::send(fd.as_raw_fd(), &msg, socket::MsgFlags::empty())?;
    let mut buf = [0u8; 256];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty())?;
    // NLMSG_ERROR (type 2) carries the result: 0 for success, -errno otherwise.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(nix::errno::Errno::from_raw(-code));
        }
    }
    Ok(())
}

/// Listens on the host side once the app accepts on `port`, then relays connections.
pub(super) async fn forward_tcp(fd: OwnedFd, port: u16) {
    let inside = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    loop {
        if tokio::net::TcpStream::connect(inside).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener = socket::Backlog::new(128)
        .and_then(|b| socket::listen(&fd, b))
        .map_err(std::io::Error::from)
        .and_then(|()| {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            eprintln!("archy-process: cannot listen for port {port}: {e}");
            return;
        }
    };
    loop {
        let Ok((mut outside, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut app) = tokio::net::TcpStream::connect(inside).await {
                let _ = tokio::io::copy_bidirectional(&mut outside, &mut app).await;
            }
        });
    }
}

/// Relays datagrams: one socket inside per outside peer, dropped after 2 idle minutes.
pub(super) async fn forward_udp(sock: std::net::UdpSocket, port: u16) {
    let host = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(sock))
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("archy-process: udp port {port}: {e}");
            return;
        }
    };
    let inside = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = host.recv_from(&mut buf).await else {
            continue;
        };
        let known = peers.lock().ok().and_then(|p| p.get(&from).cloned());
        let app = match known {
            Some(s) => s,
            None => {
                let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if s.connect(inside).await.is_err() {
                    continue;
                }
                let s = Arc::new(s);
                if let Ok(mut p) = peers.lock() {
                    p.insert(from, s.clone());
                }
                let (s2, host2, peers2) = (s.clone(), host.clone(), peers.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(120), s2.recv(&mut buf)).await
                    {
                        let _ = host2.send_to(&buf[..n], from).await;
                    }
                    if let Ok(mut p) = peers2.lock() {
                        p.remove(&from);
                    }
                });
                s
            }
        };
        let _ = app.send(&buf[..n]).await;
    }
}

// ---------------------------------------------------------------------------------------
// exec
