//! The kernel's view of our upload sockets: round-trip times from
//! `TCP_INFO`, and `SO_MAX_PACING_RATE` to send evenly spaced packets at
//! exactly the rate the controller wants.
//!
//! The HTTP stacks we upload through (reqwest/hyper, OpenDAL) never hand out
//! their sockets, so the sockets are found the way `ss -p` finds them: every
//! descriptor of this process is listed in `/proc/self/fd`, and the ones
//! connected to an upload endpoint are ours to pace. Reading and setting a
//! socket option on a descriptor cannot disturb its owner's use of it.
//!
//! The only module with `unsafe` code on Linux: libc socket calls (and
//! `getifaddrs`) whose buffers are sized and initialised here. No crate
//! offers `TCP_INFO` with `tcpi_notsent_bytes`/`tcpi_snd_wnd` or
//! `SO_MAX_PACING_RATE`.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

/// What one upload socket reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpInfo {
    pub srtt: Duration,
    pub mss: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Bytes written by the application, not yet sent.
    pub notsent: u32,
    pub bytes_acked: u64,
    /// Payload bytes sent, retransmissions included (Linux 4.19+).
    pub bytes_sent: Option<u64>,
    pub cwnd: u32,
    /// The rate the kernel paces at now, and the cap we set (bytes/s).
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    /// The peer's receive window (bytes), where the kernel reports it (5.4+).
    pub snd_wnd: Option<u32>,
}

impl TcpInfo {
    /// Data waits to be sent or acknowledged: the RTT is current.
    pub fn busy(&self) -> bool {
        self.unacked > 0 || self.notsent > 0
    }

    /// Parses the kernel's `struct tcp_info` (linux/tcp.h); `None` when the
    /// kernel is too old to have the fields used here (before 4.10).
    pub fn parse(b: &[u8]) -> Option<TcpInfo> {
        let u32_at = |o: usize| Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?));
        let u64_at = |o: usize| Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?));
        Some(TcpInfo {
            mss: u32_at(16)?,
            unacked: u32_at(24)?,
            srtt: Duration::from_micros(u64::from(u32_at(68)?)),
            bytes_acked: u64_at(120)?,
            bytes_sent: u64_at(200),
            notsent: u32_at(144)?,
            cwnd: u32_at(80)?,
            pacing_rate: u64_at(104)?,
            max_pacing_rate: u64_at(112)?,
            snd_wnd: u32_at(228),
        })
    }
}

/// The descriptors of this process's TCP sockets connected to `peers`.
#[cfg(target_os = "linux")]
pub fn sockets_to(peers: &[SocketAddr]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| peer(*fd).is_some_and(|p| peers.contains(&p)))
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub fn sockets_to(_peers: &[SocketAddr]) -> Vec<i32> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn peer(fd: i32) -> Option<SocketAddr> {
    address(fd, libc::getpeername)
}

/// The address `fd` sends from.
#[cfg(target_os = "linux")]
pub fn local_ip(fd: i32) -> Option<std::net::IpAddr> {
    address(fd, libc::getsockname).map(|a| a.ip())
}

#[cfg(not(target_os = "linux"))]
pub fn local_ip(_fd: i32) -> Option<std::net::IpAddr> {
    None
}

/// One end of `fd`'s connection: `getpeername` or `getsockname`.
#[cfg(target_os = "linux")]
fn address(
    fd: i32,
    get: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> Option<SocketAddr> {
    // SAFETY: `ss` is a zeroed sockaddr_storage, large enough for any
    // address; `len` tells the kernel its size and comes back as the
    // address's length.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let r = unsafe {
        get(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel filled `ss` with an address of its stated family.
    unsafe { socket_addr((&ss as *const libc::sockaddr_storage).cast()) }
}

/// The IPv4 or IPv6 address a `sockaddr` holds.
///
/// # Safety
/// `sa` points to a sockaddr whose family says its real type.
#[cfg(target_os = "linux")]
unsafe fn socket_addr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            let a: &libc::sockaddr_in = unsafe { &*sa.cast() };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let a: &libc::sockaddr_in6 = unsafe { &*sa.cast() };
            Some(SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

/// The name of the interface that holds `ip`: for the address our uploads
/// send from, the one whose other traffic competes with ours.
#[cfg(target_os = "linux")]
pub fn interface_with(ip: std::net::IpAddr) -> Option<String> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list freed by freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` walks the list getifaddrs returned; ifa_addr is
        // null or a sockaddr whose family says its real type, and ifa_name
        // a NUL-terminated name.
        unsafe {
            let a = &*cur;
            if !a.ifa_addr.is_null() && socket_addr(a.ifa_addr).is_some_and(|s| s.ip() == ip) {
                found = Some(
                    std::ffi::CStr::from_ptr(a.ifa_name)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            cur = a.ifa_next;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

#[cfg(not(target_os = "linux"))]
pub fn interface_with(_ip: std::net::IpAddr) -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
pub fn tcp_info(fd: i32) -> Option<TcpInfo> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and returns
    // how many it wrote.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    TcpInfo::parse(&buf[..(len as usize).min(buf.len())])
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_fd: i32) -> Option<TcpInfo> {
    None
}

/// Caps the socket's sending rate; `None` lifts the cap. The kernel spaces
/// packets evenly at this rate (TCP's internal pacing, no `fq` needed).
#[cfg(target_os = "linux")]
pub fn set_pacing(fd: i32, bytes_per_sec: Option<u64>) -> bool {
    // A 64-bit value is accepted since Linux 4.20; older kernels read 32 bits.
    let v: u64 = bytes_per_sec.unwrap_or(u64::MAX);
    // SAFETY: passes a pointer to a live u64 and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&v as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Lets the application queue at most `bytes` not yet sent: what sits in the
/// socket is what still goes out after a pause or a rate cut, so it is kept
/// to a fraction of a second of sending.
#[cfg(target_os = "linux")]
pub fn set_notsent_lowat(fd: i32, bytes: u32) -> bool {
    let v: libc::c_int = bytes.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
pub fn set_notsent_lowat(_fd: i32, _bytes: u32) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
pub fn set_pacing(_fd: i32, _bytes_per_sec: Option<u64>) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn finds_our_socket_reads_rtt_and_paces_it() {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = l.local_addr().expect("addr");
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut n = 0;
            let mut buf = [0u8; 65536];
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        });
        let mut s = TcpStream::connect(addr).expect("connect");
        let fds = sockets_to(&[addr]);
        assert_eq!(fds, vec![s.as_raw_fd()], "only the socket to {addr}");
        assert!(sockets_to(&["127.0.0.1:1".parse().expect("addr")]).is_empty());
        // 4 MB/s: 2 MB must take about half a second, not milliseconds.
        assert!(set_pacing(s.as_raw_fd(), Some(4_000_000)));
        let t = std::time::Instant::now();
        s.write_all(&vec![7u8; 2_000_000]).expect("write");
        let info = loop {
            let i = tcp_info(s.as_raw_fd()).expect("tcp_info");
            if !i.busy() {
                break i;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t.elapsed();
        assert!(
            took > Duration::from_millis(300),
            "pacing ignored: {took:?}"
        );
        assert!(info.bytes_acked >= 2_000_000);
        assert!(info.mss > 0 && info.srtt > Duration::ZERO);
        drop(s);
        assert_eq!(reader.join().expect("reader"), 2_000_000);
    }

    #[test]
    fn finds_the_interface_a_socket_sends_from() {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen");
        let s = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let ip = local_ip(s.as_raw_fd()).expect("local address");
        assert_eq!(ip, std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!(interface_with(ip).as_deref(), Some("lo"));
        assert_eq!(interface_with(std::net::IpAddr::from([192, 0, 2, 1])), None);
    }

    #[test]
    fn short_tcp_info_is_refused() {
        assert_eq!(TcpInfo::parse(&[0u8; 100]), None);
    }
}
