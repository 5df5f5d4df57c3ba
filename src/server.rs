//! Accepts connections and serves HTTP/1.1 and HTTP/2 with limits that poem's own server
//! does not set: without a timer, hyper lets a connection that never finishes its headers
//! stay open forever, and with no cap on connections a few thousand such clients exhaust
//! the file descriptors.
//!
//! - A request's headers must arrive within [`HEADER_DEADLINE`] (HTTP/1.1; the same timer
//!   closes a keep-alive connection that sends no next request).
//! - A connection with no bytes in either direction for [`IDLE_TIMEOUT`] is closed.
//! - At most `WXAUTH_MAX_CONNECTIONS` connections are open; past it, new ones wait in the
//!   kernel's backlog instead of being accepted.
//! - HTTP/2 allows [`MAX_STREAMS`] concurrent streams per connection, with explicit
//!   bounds on what a connection can make the server hold (see [`MAX_SEND_BUFFER`]).
//! - A failed `accept` (EMFILE) pauses the loop instead of spinning on it.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{Addr, Endpoint, Response};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};

/// How long a client may take to send a request's headers.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection may carry no bytes at all.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times per [`IDLE_TIMEOUT`] a connection is checked for idleness.
const IDLE_CHECKS: u32 = 4;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_STREAMS: u32 = 100;
/// Bytes of a response body HTTP/2 queues per stream beyond what the client's window has
/// let out (hyper's default is 400 KB). A client that opens [`MAX_STREAMS`] streams with a
/// window of 0 and answers PINGs keeps every answer unsent for as long as it likes; what
/// each stream holds is then its answer: hyper takes a body's chunk whole, and wxauth's
/// bodies are one chunk each. The large ones (Swagger UI, the OpenAPI document, the JWKS)
/// are shared `Bytes`, a reference per stream; the rest are built per request and small.
/// This bound is for longer bodies, should one ever stream.
pub const MAX_SEND_BUFFER: usize = 64 * 1024;
/// HTTP/2 stream window: request body bytes a client may send on a stream before the
/// server reads them. Four request bodies' worth ([`crate::api::MAX_BODY_BYTES`]), so that
/// a body never waits for a window update.
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 connection window: request body bytes unread by the server, all streams of a
/// connection together (hyper's default is 1 MB).
pub const CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest HTTP/2 header list a client may send (hyper's default, set explicitly).
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Largest request head (request line and headers) an HTTP/1.1 client may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept`, e.g. when file descriptors ran out.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type Body = BoxBody<Bytes, io::Error>;

/// Serves `endpoint` on `listener` until `stop` completes, then lets requests in progress
/// finish for up to `grace`.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    max_connections: usize,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stopping, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(io::Error::other)?,
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if last_accept_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(error = %e, "accepting a connection failed (out of file descriptors?); pausing");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (endpoint, stopped) = (endpoint.clone(), stopped.clone());
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, local, remote, endpoint, stopped).await;
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "requests still running after the shutdown grace period; dropping them"
        );
        connections.abort_all();
    }
    Ok(())
}

async fn serve_connection<E>(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<E>,
    mut stopped: watch::Receiver<bool>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let activity = Arc::new(AtomicU64::new(0));
    let io = Tracked { inner: stream, activity: activity.clone() };
    // Requests being answered: a slow answer (WeChat may take seconds) is not idleness.
    let answering = Arc::new(AtomicUsize::new(0));
    let busy = answering.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let endpoint = endpoint.clone();
        let answering = Answering::start(busy.clone());
        let req = poem::Request::from((
            req,
            poem::web::LocalAddr(Addr::SocketAddr(local)),
            poem::web::RemoteAddr(Addr::SocketAddr(remote)),
            poem::http::uri::Scheme::HTTP,
        ));
        async move {
            let response = endpoint.get_response(req).await;
            drop(answering);
            Ok::<_, Infallible>(hyper::Response::<Body>::from(response))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_DEADLINE).max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(MAX_SEND_BUFFER)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    // Idle: no bytes moved and nothing being answered at IDLE_CHECKS checks in a row.
    let (mut seen, mut quiet) = (0, 0);
    loop {
        let idle_check = tokio::time::sleep(IDLE_TIMEOUT / IDLE_CHECKS);
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stopped.changed(), if !closing => {
                if changed.is_err() || *stopped.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = idle_check => {
                let now = activity.load(Ordering::Relaxed);
                if now != seen || answering.load(Ordering::Relaxed) > 0 {
                    (seen, quiet) = (now, 0);
                } else {
                    quiet += 1;
                    if quiet >= IDLE_CHECKS {
                        // Nothing moved: no request is being read or answered. Drop it.
                        return;
                    }
                }
            }
        }
    }
}

/// One request being answered on a connection, until dropped (also when the client goes
/// away and hyper drops the answer).
struct Answering(Arc<AtomicUsize>);

impl Answering {
    fn start(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that counts the reads and writes that moved bytes: a counter, not a clock
/// reading, because it is touched on every read and write of every request.
struct Tracked {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    /// A tracked server side and its plain client side.
    async fn pair() -> (Tracked, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Tracked { inner: server, activity: Arc::new(AtomicU64::new(0)) }, client)
    }

    fn moved(tracked: &Tracked) -> bool {
        tracked.activity.swap(0, Ordering::Relaxed) > 0
    }

    async fn receive(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(PATIENCE, client.read_exact(&mut buf)).await.expect("nothing arrived").unwrap();
        buf
    }

    #[tokio::test]
    async fn bytes_read_or_written_count_as_activity_and_the_end_of_the_stream_does_not() {
        let (mut tracked, mut client) = pair().await;

        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tracked.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert!(moved(&tracked), "bytes read were not activity");

        tracked.write_all(b"pong").await.unwrap();
        assert_eq!(receive(&mut client, 4).await, b"pong");
        assert!(moved(&tracked), "bytes written were not activity");

        let written = tracked.write_vectored(&[io::IoSlice::new(b"po"), io::IoSlice::new(b"ng")]).await.unwrap();
        assert_eq!(written, 4);
        assert_eq!(receive(&mut client, 4).await, b"pong");
        assert!(moved(&tracked), "bytes written in slices were not activity");

        client.shutdown().await.unwrap();
        assert_eq!(tracked.read(&mut buf).await.unwrap(), 0);
        assert!(!moved(&tracked), "the end of the stream counted as activity");
    }

    #[tokio::test]
    async fn shutting_a_tracked_stream_down_ends_the_peer_s_stream() {
        let (mut tracked, mut client) = pair().await;

        tracked.shutdown().await.unwrap();

        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, client.read(&mut buf)).await.expect("no end of stream");
        assert_eq!(read.unwrap(), 0);
    }
}
