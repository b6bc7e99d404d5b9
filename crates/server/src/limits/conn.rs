//! Connection limits: deadlines for the TLS handshake, the request head, an
//! idle keep-alive connection and a response the client stopped reading,
//! and a table of open connections capped per source address and in total.
//!
//! When the table is full, a new connection takes the place of the oldest
//! one that has not yet sent a whole request head (a slow or silent
//! client), else of the oldest that never made a request with a valid
//! device token; connections of authenticated devices are never pushed
//! out. So a flood of connections that say nothing, from any number of
//! addresses, delays a device by at most one handshake, never locks it out.

use axum::http::{header, Request, Response, StatusCode};
use axum_server::accept::Accept;
use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Future, Ready};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A TLS handshake is two round trips of a few KiB; 10 s covers a 1 s
/// round trip with retransmissions and is what axum-server uses by default.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// From the end of the handshake (or of the previous response) to the end
/// of the next request head. hyper starts this clock as soon as a
/// connection waits for a request, so it is also the idle keep-alive
/// timeout. Clients write a head in one go right away; 20 s rides out TCP's
/// retransmission back-off (1 + 2 + 4 + 8 s) on a bad link, and keeps a
/// pooled idle connection long enough to carry a backup's next request.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// A response write that makes no progress this long means the client
/// stopped reading (its receive window stays full); even a throttled
/// restore at a few KB/s drains a socket buffer within seconds.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections from one source address (an IPv4 address, or an IPv6 /64,
/// which one host usually owns whole). An office behind one NAT address
/// backs up a couple of hundred laptops at once, each on about one
/// connection; 256 allows that while one hostile host alone holds at most
/// an eighth of [`MAX_CONNECTIONS`].
pub(crate) const PER_SOURCE: usize = 256;

/// Connections in total, whatever the open-file limit allows. Each costs up
/// to [`HEAD_BUFFER`] plus rustls's buffers (about 100 KiB in all at worst),
/// so 2,048 stay near 200 MiB; devices hold a connection only while they
/// back up and drop it [`HEADER_TIMEOUT`] after, so that serves fleets of
/// thousands.
pub(crate) const MAX_CONNECTIONS: usize = 2048;

/// Open files kept out of the connection budget for the repository's packs
/// and index files, SQLite (database, WAL, shared memory), logs and the
/// runtime's own descriptors (a prune or a burst of restores opens a few
/// dozen at once), and for sockets accepted in a burst before their task
/// has checked the table (tokio's cooperative budget lets at most about 128
/// through between checks): 256 covers both.
pub(crate) const RESERVED_FILES: u64 = 256;

/// hyper's read buffer, the largest request head it reads before answering
/// a bodyless 431 itself. Four times [`super::MAX_HEAD_BYTES`] so that the
/// heads clients plausibly send over the limit get the JSON 431 from
/// [`super::guard`]; request bodies stream through it at any size.
pub(crate) const HEAD_BUFFER: usize = 4 * super::MAX_HEAD_BYTES;

/// The header count at which hyper answers a bodyless 431 itself; twice
/// [`super::MAX_HEADERS`] for the same reason.
pub(crate) const HYPER_MAX_HEADERS: usize = 2 * super::MAX_HEADERS;

/// Sets hyper's HTTP/1 deadlines and buffer sizes.
pub(crate) fn configure(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .max_buf_size(HEAD_BUFFER)
        .max_headers(HYPER_MAX_HEADERS);
}

/// How many connections the table takes: [`MAX_CONNECTIONS`], or fewer if
/// the open-file limit (raised to its hard limit first) leaves less than
/// that after [`RESERVED_FILES`].
pub(crate) fn budget() -> (usize, usize) {
    let total = match raise_open_file_limit() {
        Some(files) => {
            let spare = files.saturating_sub(RESERVED_FILES).max(files / 2);
            usize::try_from(spare).map_or(MAX_CONNECTIONS, |s| s.min(MAX_CONNECTIONS))
        }
        None => MAX_CONNECTIONS,
    }
    .max(1);
    (total, PER_SOURCE.min(total))
}

/// Raises the soft open-file limit to the hard one (many systems start
/// processes at 1,024 however high the hard limit is) and returns the
/// limit in force, or `None` where it cannot be read.
#[cfg(unix)]
#[allow(unsafe_code)]
// `rlim_t` is u64 on Linux and macOS but not on every Unix.
#[allow(clippy::unnecessary_cast)]
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given. It fails
        // (and changes nothing) where the hard limit is "unlimited" but the
        // kernel caps files lower, as macOS does; the old limit stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            tracing::warn!(
                soft = limit.rlim_cur as u64,
                hard = limit.rlim_max as u64,
                "could not raise the open-file limit; serving fewer connections"
            );
        }
    }
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Where a connection comes from, for [`PER_SOURCE`]: an IPv4 address, or
/// the /64 an IPv6 address is in (a host is usually given a whole /64 and
/// could otherwise use a new address per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => Source::V6Net((u128::from(a) >> 64) as u64),
        }
    }
}

/// How far a connection has shown it is a real client; eviction takes the
/// lowest stage first.
const SILENT: u8 = 0;
/// Sent at least one whole request head.
const SPOKE: u8 = 1;
/// Made a request with a device token the server accepted.
const TRUSTED: u8 = 2;

/// One open connection as the table sees it.
pub(crate) struct Conn {
    stage: AtomicU8,
    /// Cancelled when the table pushes this connection out.
    closed: CancellationToken,
}

impl Conn {
    fn rise_to(&self, stage: u8) {
        self.stage.fetch_max(stage, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("already {0} connections from this address")]
    Source(usize),
    #[error("already {0} connections, all from authenticated devices")]
    Full(usize),
}

/// The open connections, counted per source and in total.
pub(crate) struct Table {
    total: usize,
    per_source: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// By admission order, so the first match is the oldest.
    live: BTreeMap<u64, Live>,
    per_source: HashMap<Source, usize>,
}

struct Live {
    source: Source,
    conn: Arc<Conn>,
}

impl State {
    fn remove(&mut self, seq: u64) -> Option<Arc<Conn>> {
        let live = self.live.remove(&seq)?;
        if let Some(n) = self.per_source.get_mut(&live.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&live.source);
            }
        }
        Some(live.conn)
    }

    /// Closes the oldest connection of the lowest stage below
    /// [`TRUSTED`]; false if every connection is trusted.
    fn evict_one(&mut self) -> bool {
        let victim = [SILENT, SPOKE].iter().find_map(|&stage| {
            self.live
                .iter()
                .find(|(_, l)| l.conn.stage.load(Ordering::Relaxed) == stage)
                .map(|(&seq, _)| seq)
        });
        match victim.and_then(|seq| self.remove(seq)) {
            Some(conn) => {
                conn.closed.cancel();
                true
            }
            None => false,
        }
    }
}

impl Table {
    pub(crate) fn new(total: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Table {
            total,
            per_source,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a connection from `ip`, pushing out an unproven
    /// one if the table is full.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let source = Source::from(ip);
        let mut state = self.lock();
        if state.per_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            return Err(Refused::Source(self.per_source));
        }
        if state.live.len() >= self.total && !state.evict_one() {
            return Err(Refused::Full(self.total));
        }
        let seq = state.next;
        state.next += 1;
        let conn = Arc::new(Conn {
            stage: AtomicU8::new(SILENT),
            closed: CancellationToken::new(),
        });
        state.live.insert(
            seq,
            Live {
                source,
                conn: conn.clone(),
            },
        );
        *state.per_source.entry(source).or_default() += 1;
        Ok(Ticket {
            table: self.clone(),
            seq,
            conn,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().live.len()
    }
}

/// A place in the [`Table`], given back when dropped.
pub(crate) struct Ticket {
    table: Arc<Table>,
    seq: u64,
    conn: Arc<Conn>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table.lock().remove(self.seq);
    }
}

/// A connection's socket, holding its [`Ticket`]: reads and writes fail
/// once the table pushed it out, and a write that stalls for
/// [`WRITE_STALL_TIMEOUT`] fails.
pub(crate) struct Guarded<S> {
    io: S,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stall_limit: Duration,
    _ticket: Ticket,
}

impl<S> Guarded<S> {
    fn new(io: S, ticket: Ticket) -> Self {
        Self::with_stall_limit(io, ticket, WRITE_STALL_TIMEOUT)
    }

    fn with_stall_limit(io: S, ticket: Ticket, stall_limit: Duration) -> Self {
        Guarded {
            io,
            closed: Box::pin(ticket.conn.closed.clone().cancelled_owned()),
            write_stall: None,
            stall_limit,
            _ticket: ticket,
        }
    }

    fn pushed_out(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.closed.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for other clients",
            )
        })
    }

    fn stall_check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let limit = self.stall_limit;
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if stall.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    )))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                self.write_stall = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.pushed_out(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.pushed_out(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.stall_check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.pushed_out(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.stall_check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.stall_check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The connection's service, telling the table when the connection has
/// sent a request head and when it has shown a valid device token.
#[derive(Clone)]
pub(crate) struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<Request<B>> for Watched<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.conn.rise_to(SPOKE);
        let with_token = req.headers().contains_key(header::AUTHORIZATION);
        let conn = self.conn.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await;
            let accepted = matches!(&response, Ok(r) if r.status() != StatusCode::UNAUTHORIZED);
            if with_token && accepted {
                conn.rise_to(TRUSTED);
            }
            response
        })
    }
}

/// The acceptor in front of the TLS one (or of none): takes a place in the
/// [`Table`] for each new connection, or closes it at once when its source
/// has [`PER_SOURCE`] already or the table is full of trusted connections.
/// It runs in the connection's own task, so the accept loop never waits.
#[derive(Clone)]
pub(crate) struct Admit<A> {
    inner: A,
    table: Arc<Table>,
}

impl<A> Admit<A> {
    pub(crate) fn new(inner: A, table: Arc<Table>) -> Self {
        Admit { inner, table }
    }
}

impl<A, S> Accept<TcpStream, S> for Admit<A>
where
    A: Accept<Guarded<TcpStream>, Watched<S>>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Either<A::Future, Ready<io::Result<(A::Stream, A::Service)>>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let ip = match stream.peer_addr() {
            Ok(peer) => peer.ip(),
            Err(e) => return Either::Right(ready(Err(e))),
        };
        match self.table.admit(ip) {
            Ok(ticket) => {
                let conn = ticket.conn.clone();
                let service = Watched {
                    inner: service,
                    conn,
                };
                Either::Left(self.inner.accept(Guarded::new(stream, ticket), service))
            }
            Err(refused) => {
                // Logged at debug only: a flood would fill the log.
                tracing::debug!(%ip, %refused, "connection closed at once");
                drop(stream);
                Either::Right(ready(Err(io::Error::other(refused))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_source_over_its_cap_is_refused_and_others_still_get_in() {
        let table = Table::new(10, 3);
        let held: Vec<_> = (0..3)
            .map(|_| table.admit(ip("10.0.0.2")).expect("under the cap"))
            .collect();
        assert!(matches!(
            table.admit(ip("10.0.0.2")),
            Err(Refused::Source(3))
        ));
        // The same host over IPv4-mapped IPv6 is the same source.
        assert!(table.admit(ip("::ffff:10.0.0.2")).is_err());
        // Another address of the same IPv6 /64 counts together.
        let _a = table.admit(ip("2001:db8::1")).expect("first of the /64");
        let _b = table.admit(ip("2001:db8::2")).expect("second");
        let _c = table.admit(ip("2001:db8::3")).expect("third");
        assert!(table.admit(ip("2001:db8::4")).is_err());
        let _other = table.admit(ip("10.0.0.1")).expect("another source");
        drop(held);
        let _again = table.admit(ip("10.0.0.2")).expect("places given back");
    }

    #[test]
    fn a_full_table_pushes_out_the_oldest_silent_then_the_oldest_untrusted_never_a_device() {
        let table = Table::new(3, 3);
        let device = table.admit(ip("10.0.0.1")).expect("device");
        device.conn.rise_to(SPOKE);
        device.conn.rise_to(TRUSTED);
        let talker = table.admit(ip("10.0.0.2")).expect("talker");
        talker.conn.rise_to(SPOKE);
        let silent = table.admit(ip("10.0.0.3")).expect("silent");

        let newcomer = table
            .admit(ip("10.0.0.4"))
            .expect("takes the silent one's place");
        assert!(silent.conn.closed.is_cancelled());
        assert!(!talker.conn.closed.is_cancelled());
        assert_eq!(table.len(), 3);

        newcomer.conn.rise_to(TRUSTED);
        let _second = table
            .admit(ip("10.0.0.5"))
            .expect("takes the talker's place");
        assert!(talker.conn.closed.is_cancelled());
        assert!(!device.conn.closed.is_cancelled());

        // Only trusted connections and one new silent one: that one goes.
        let _third = table
            .admit(ip("10.0.0.6"))
            .expect("takes the newest silent place");
        assert!(!device.conn.closed.is_cancelled());

        // Dropping a pushed-out ticket does not free a place twice.
        drop(silent);
        drop(talker);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_table_full_of_devices_refuses() {
        let table = Table::new(2, 2);
        let a = table.admit(ip("10.0.0.1")).expect("a");
        let b = table.admit(ip("10.0.0.2")).expect("b");
        a.conn.rise_to(TRUSTED);
        b.conn.rise_to(TRUSTED);
        assert!(matches!(table.admit(ip("10.0.0.3")), Err(Refused::Full(2))));
    }

    #[tokio::test]
    async fn a_pushed_out_connection_reads_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server_side, peer) = listener.accept().await.expect("accept");
        let table = Table::new(1, 1);
        let ticket = table.admit(peer.ip()).expect("first");
        let mut guarded = Guarded::new(server_side, ticket);
        let _newcomer = table
            .admit(ip("10.0.0.9"))
            .expect("pushes the silent one out");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut guarded, &mut buf),
        )
        .await
        .expect("the read ends at once");
        assert_eq!(
            read.expect_err("pushed out").kind(),
            io::ErrorKind::ConnectionAborted
        );
    }

    #[tokio::test]
    async fn a_response_nobody_reads_ends_after_the_stall_limit() {
        let table = Table::new(1, 1);
        let ticket = table.admit(ip("10.0.0.1")).expect("first");
        // The client end is kept but never read: 4 KiB of buffer fill up.
        let (server_side, _client) = tokio::io::duplex(4096);
        let mut guarded =
            Guarded::with_stall_limit(server_side, ticket, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncWriteExt::write_all(&mut guarded, &[0u8; 64 << 10]),
        )
        .await
        .expect("the write gives up by itself");
        assert_eq!(
            written.expect_err("stalled").kind(),
            io::ErrorKind::TimedOut
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
