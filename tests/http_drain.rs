//! The drain covers plain HTTP and Server-Sent Events, over real sockets and real
//! signals: a response streaming when SIGTERM arrives arrives whole, a keep-alive
//! client sending through the drain is never reset mid-response, a response still
//! streaming at the deadline is cut (counted and logged), and SSE streams end at an
//! event boundary with a `retry:` hint, staggered like WebSockets.

mod common;

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Launch, Proxy, http, rss_kib, spawn_proxy};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type AppBody = BoxBody<Bytes, Infallible>;

/// The header every `EventSource` sends; a first request with it is served off hyper.
const EVENT_SOURCE: &str = "Accept: text/event-stream\r\n";

/// A body of `chunks` pieces of `size` bytes, one every `every`.
fn paced(chunks: usize, size: usize, every: Duration, fill: u8) -> AppBody {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![fill; size]))),
            i + 1,
        ))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Server-Sent Events `id: N / data: event N` from `first` on, one every `every`,
/// each written in two pieces (so a close that comes between them has to wait).
fn events(first: u64, every: Duration) -> AppBody {
    let stream = futures_util::stream::unfold((first, false), move |(n, second)| async move {
        let piece = if second {
            format!("data: event {n}\n\n")
        } else {
            tokio::time::sleep(every).await;
            format!("id: {n}\n")
        };
        let next = if second { (n + 1, false) } else { (n, true) };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(piece))), next))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// A hyper app with a few streaming answers: `/10k` (10 KiB, 1 KiB per 100 ms,
/// Content-Length), `/3s` (3,000 bytes, 100 per 100 ms), `/4k` (4 KiB in 4 pieces over 200 ms), `/forever` (chunked, never
/// ends), `/sse` (an event stream honouring Last-Event-ID).
async fn start_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let ms = Duration::from_millis;
                    let resp = match req.uri().path() {
                        "/10k" => Response::builder()
                            .header("content-length", "10240")
                            .body(paced(10, 1024, ms(100), b'a')),
                        "/3s" => Response::builder()
                            .header("content-length", "3000")
                            .body(paced(30, 100, ms(100), b'd')),
                        "/4k" => Response::builder()
                            .header("content-length", "4096")
                            .body(paced(4, 1024, ms(50), b'b')),
                        "/forever" => Response::builder().body(paced(usize::MAX, 16, ms(50), b'c')),
                        "/sse" => {
                            let from = req
                                .headers()
                                .get("last-event-id")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .map_or(1, |n| n + 1);
                            Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(events(from, ms(40)))
                        }
                        _ => Response::builder().status(404).body(paced(0, 0, ms(0), 0)),
                    };
                    Ok::<_, Infallible>(resp.expect("response"))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Collects a child's stderr on a thread, for assertions on the log.
fn capture_stderr(child: &mut std::process::Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("log")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

async fn start_proxy(app: SocketAddr, extra: &[&str]) -> (Proxy, Arc<Mutex<String>>) {
    let (mut child, listen, admin) = spawn_proxy(Launch {
        upstream: app,
        extra,
        log_level: "info",
        nofile: None,
        stderr: Stdio::piped(),
    })
    .await;
    let log = capture_stderr(&mut child);
    (
        Proxy {
            child,
            listen,
            admin,
        },
        log,
    )
}

/// One response read off a keep-alive connection.
#[derive(Debug)]
struct Answer {
    head: String,
    body: Vec<u8>,
    /// The body was complete (Content-Length reached, or the last chunk read).
    complete: bool,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("connection: close"))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A raw HTTP/1.1 client connection that reads answers byte by byte off the socket, so
/// a cut shows as what it is (EOF or reset before the body is complete).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, path: &str, extra: &str) -> std::io::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        self.stream.write_all(req.as_bytes()).await
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads one answer. `on_data` sees the body as it arrives (de-chunked). A body
    /// that ends early comes back with `complete: false`; `Err` only when not even a
    /// head arrived.
    async fn answer(&mut self, mut on_data: impl FnMut(&[u8])) -> std::io::Result<Answer> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await? {
                return Err(std::io::Error::other("connection ended before a head"));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end);
        let mut answer = Answer {
            head,
            body: Vec::new(),
            complete: false,
        };
        let length: Option<usize> = answer.header("content-length").and_then(|v| v.parse().ok());
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if let Some(len) = length {
            loop {
                let take = self.buf.len().min(len - answer.body.len());
                on_data(&self.buf[..take]);
                answer.body.extend(self.buf.drain(..take));
                if answer.body.len() == len {
                    answer.complete = true;
                    return Ok(answer);
                }
                if !matches!(self.fill().await, Ok(true)) {
                    return Ok(answer);
                }
            }
        }
        if chunked {
            loop {
                // One chunk: size line, data, CRLF.
                let parsed = find(&self.buf, b"\r\n").and_then(|eol| {
                    let size = std::str::from_utf8(&self.buf[..eol]).ok()?;
                    let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
                    (self.buf.len() >= eol + 2 + size + 2).then_some((eol, size))
                });
                match parsed {
                    Some((eol, 0)) => {
                        self.buf.drain(..eol + 4);
                        answer.complete = true;
                        return Ok(answer);
                    }
                    Some((eol, size)) => {
                        let data = self.buf[eol + 2..eol + 2 + size].to_vec();
                        self.buf.drain(..eol + 2 + size + 2);
                        on_data(&data);
                        answer.body.extend(data);
                    }
                    None => {
                        if !matches!(self.fill().await, Ok(true)) {
                            return Ok(answer);
                        }
                    }
                }
            }
        }
        // Close-delimited.
        loop {
            on_data(&self.buf);
            answer.body.append(&mut self.buf);
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    answer.complete = true;
                    return Ok(answer);
                }
                Err(_) => return Ok(answer),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_streaming_at_sigterm_arrives_whole_and_the_process_exits_right_after() {
    let app = start_app().await;
    let (mut proxy, log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "100ms",
            "--drain-window",
            "3s",
            "--close-timeout",
            "3s",
        ],
    )
    .await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/10k", "").await.expect("send");
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let mut first = Some(first_tx);
    let reading = tokio::spawn(async move {
        let answer = conn
            .answer(|_| {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            })
            .await;
        (answer, Instant::now())
    });
    tokio::time::timeout(Duration::from_secs(5), first_rx)
        .await
        .expect("the body starts within 5 s")
        .expect("first bytes");
    // Wait until the gauge says the response is in flight (a build without it skips this).
    let in_flight = proxy.metric("wsdrain_http_requests_in_flight").await;
    proxy.signal("TERM");
    let (answer, ended) = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the answer ends")
        .expect("reader");
    let answer = answer.expect("an answer head");
    assert!(
        answer.complete && answer.body.len() == 10240,
        "the 10 KiB response was cut: {} bytes arrived (in flight at SIGTERM: {in_flight})",
        answer.body.len()
    );
    let code = proxy.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit after the response");
    assert!(
        ended.elapsed() < Duration::from_secs(2),
        "the process exited {:?} after the last response ended (the deadline was 6 s away)",
        ended.elapsed()
    );
    assert_eq!(
        in_flight, 1.0,
        "wsdrain_http_requests_in_flight during the response"
    );
    drop(log);
}

/// The app container's preStop hook waits on `/prestop`, and the kubelet sends the app
/// SIGTERM when it returns: answering while a response is still streaming would let the
/// app die under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestop_answers_only_once_no_plain_response_is_in_flight() {
    let app = start_app().await;
    let (proxy, _log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "100ms",
            "--drain-window",
            "1s",
            "--close-timeout",
            "8s",
        ],
    )
    .await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/3s", "").await.expect("send");
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let mut first = Some(first_tx);
    let reading = tokio::spawn(async move {
        let answer = conn
            .answer(|_| {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            })
            .await;
        (answer, Instant::now())
    });
    tokio::time::timeout(Duration::from_secs(5), first_rx)
        .await
        .expect("the body starts within 5 s")
        .expect("first bytes");
    let admin = proxy.admin;
    let prestop = tokio::spawn(async move {
        let answer = http(admin, "GET", "/prestop", &[], b"").await;
        (answer, Instant::now())
    });
    let (answer, ended) = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the answer ends")
        .expect("reader");
    let answer = answer.expect("an answer head");
    assert!(
        answer.complete && answer.body.len() == 3000,
        "the response was cut: {} bytes arrived",
        answer.body.len()
    );
    let (status, answered) = tokio::time::timeout(Duration::from_secs(10), prestop)
        .await
        .expect("/prestop answers")
        .expect("task");
    let (status, _) = status.expect("/prestop");
    assert_eq!(status, 200);
    assert!(
        answered >= ended,
        "/prestop answered {:?} before the response in flight ended",
        ended - answered
    );
    assert!(
        answered - ended < Duration::from_secs(3),
        "/prestop answered {:?} after the last response ended (the deadline was 9 s away)",
        answered - ended
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_sending_through_the_drain_gets_connection_close_and_no_reset() {
    let app = start_app().await;
    let (mut proxy, _log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "1s",
            "--drain-window",
            "1s",
            "--close-timeout",
            "2s",
        ],
    )
    .await;
    let listen = proxy.listen;
    // Warm up one keep-alive connection, then signal and keep sending for 2.5 s, past
    // the announce (1 s) and the window (1 s) and until 1.5 s before the deadline.
    let mut conn = Conn::open(listen).await.expect("connect");
    conn.send("/4k", "").await.expect("send");
    let warm = conn.answer(|_| {}).await.expect("answer");
    assert!(warm.complete && !warm.closes(), "{warm:?}");
    proxy.signal("TERM");
    let signalled = Instant::now();
    let (mut complete, mut with_close, mut connections) = (0, 0, 1);
    let mut cut = Vec::new();
    let mut ended = String::new();
    while signalled.elapsed() < Duration::from_millis(2500) {
        if conn.send("/4k", "").await.is_err() {
            ended = format!("write refused at {:?}", signalled.elapsed());
            break;
        }
        match conn.answer(|_| {}).await {
            Ok(a) if a.complete => {
                complete += 1;
                if a.closes() {
                    with_close += 1;
                    match Conn::open(listen).await {
                        Ok(c) => conn = c,
                        Err(e) => {
                            ended = format!("reconnect refused at {:?}: {e}", signalled.elapsed());
                            break;
                        }
                    }
                    connections += 1;
                }
            }
            Ok(a) => {
                cut.push(format!(
                    "response cut after {} bytes at {:?}",
                    a.body.len(),
                    signalled.elapsed()
                ));
                break;
            }
            // Closed before a single byte of an answer (the process stopped taking
            // requests): what RFC 9112 lets a client retry; not a cut response.
            Err(e) => {
                ended = format!("no answer at {:?}: {e}", signalled.elapsed());
                break;
            }
        }
    }
    assert!(cut.is_empty(), "{cut:?} after {complete} complete answers");
    assert!(
        complete >= 4,
        "only {complete} answers through the drain ({ended})"
    );
    // The first answer may have left before the signal was handled.
    assert!(
        with_close + 1 >= complete,
        "every answer during the drain says Connection: close: {with_close} of {complete}"
    );
    assert!(connections > 2, "the client moved connections");
    assert!(ended.is_empty(), "served until the client stopped: {ended}");
    let stopped = Instant::now();
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(
        stopped.elapsed() < Duration::from_millis(1500),
        "the process exits soon after the last answer (the deadline was 1.5 s away)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_still_streaming_at_the_deadline_is_cut_counted_and_logged() {
    let app = start_app().await;
    let (mut proxy, log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "100ms",
            "--drain-window",
            "400ms",
            "--close-timeout",
            "400ms",
        ],
    )
    .await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/forever", "").await.expect("send");
    let reading = tokio::spawn(async move { conn.answer(|_| {}).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("POST /drain");
    assert_eq!(status, 202);
    let (_, body) = http(proxy.admin, "GET", "/drain", &[], b"")
        .await
        .expect("GET /drain");
    let drain: serde_json::Value = serde_json::from_str(&body).expect("json");
    let deadline_ms = drain["deadline_in_ms"].as_u64().expect("a deadline");
    assert!(
        deadline_ms >= 700,
        "the deadline covers the window for streaming responses: {drain}"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the stream was not cut within 5 s of a 0.9 s deadline")
        .expect("reader")
        .expect("a head");
    assert!(!answer.complete, "cut, not ended cleanly: {answer:?}");
    assert!(!answer.body.is_empty());
    assert_eq!(proxy.metric("wsdrain_http_responses_cut_total").await, 1.0);
    assert_eq!(proxy.metric("wsdrain_http_requests_in_flight").await, 0.0);
    let text = log.lock().expect("log").clone();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cut at the drain deadline"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {text}");
    assert!(lines[0].contains("/forever"), "with its path: {}", lines[0]);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
}

/// The events of a de-chunked SSE body, checked: every event whole (`id: N`, then
/// `data: event N`), numbered on from `first`, and the `retry:` the stream ended with.
fn check_events(body: &[u8], first: u64) -> Result<(u64, u32), String> {
    let text = String::from_utf8_lossy(body);
    let Some(rest) = text.strip_suffix("\n\n") else {
        return Err(format!("does not end at an event boundary: {text:?}"));
    };
    let mut blocks: Vec<&str> = rest.split("\n\n").collect();
    let last = blocks.pop().unwrap_or_default();
    let retry = last
        .strip_prefix("retry: ")
        .and_then(|r| r.parse::<u32>().ok())
        .ok_or_else(|| format!("the last block is not a retry: {last:?}"))?;
    let mut n = first;
    for block in blocks {
        if block != format!("id: {n}\ndata: event {n}") {
            return Err(format!("event {n} cut or out of order: {block:?}"));
        }
        n += 1;
    }
    Ok((n - first, retry))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_end_staggered_at_an_event_boundary_with_a_retry_hint() {
    let app = start_app().await;
    let (mut proxy, _log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "100ms",
            "--drain-window",
            "1s",
            "--reconnect-jitter",
            "1s",
            "--close-timeout",
            "3s",
        ],
    )
    .await;
    let clients = 20;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut conn = Conn::open(proxy.listen).await.expect("connect");
        conn.send("/sse", "Accept: text/event-stream\r\n")
            .await
            .expect("send");
        tasks.push(tokio::spawn(async move {
            let answer = conn.answer(|_| {}).await;
            (answer, Instant::now())
        }));
    }
    // Every stream is open and registered before the drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(proxy.admin, "GET", "/drain", &[], b"")
            .await
            .expect("GET /drain");
        let status: serde_json::Value = serde_json::from_str(&body).expect("json");
        if status["sse_open"] == clients && status["open"] == clients {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "streams not registered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.metric("wsdrain_sse_streams_active").await,
        f64::from(clients)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("TERM");
    let signalled = Instant::now();
    let mut ends = Vec::new();
    for task in tasks {
        let (answer, ended) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("every stream ends")
            .expect("reader");
        let answer = answer.expect("a head");
        assert!(answer.complete, "ended cleanly: {answer:?}");
        assert!(answer.closes(), "SSE answers carry Connection: close");
        let (events, retry) = check_events(&answer.body, 1).expect("whole events");
        assert!(
            events >= 5,
            "the stream ran before the drain: {events} events"
        );
        assert!(retry <= 1000, "retry {retry} within --reconnect-jitter");
        ends.push((ended.duration_since(signalled), retry));
    }
    // Staggered over the window, not all at once; hints spread over the jitter.
    ends.sort();
    let spread = ends[ends.len() - 1].0 - ends[0].0;
    assert!(
        spread >= Duration::from_millis(500),
        "closes spread over the 1 s window: {ends:?}"
    );
    let mut hints: Vec<u32> = ends.iter().map(|e| e.1).collect();
    hints.sort();
    hints.dedup();
    assert!(
        hints.len() >= 15,
        "stratified hints, not one value: {hints:?}"
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_reconnecting_with_last_event_id_misses_and_repeats_nothing() {
    // Through hyper, and off it (the first request of an EventSource).
    for extra in ["", EVENT_SOURCE] {
        an_sse_client_reconnecting_with_last_event_id_misses_and_repeats_nothing_case(extra).await;
    }
}

async fn an_sse_client_reconnecting_with_last_event_id_misses_and_repeats_nothing_case(
    extra: &str,
) {
    let app = start_app().await;
    let (proxy, _log) = start_proxy(
        app,
        &["--drain-window", "300ms", "--reconnect-jitter", "200ms"],
    )
    .await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/sse", extra).await.expect("send");
    let reading = tokio::spawn(async move { conn.answer(|_| {}).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // `/shed` applies to SSE streams like to WebSockets.
    let (status, body) = http(proxy.admin, "POST", "/shed?count=1", &[], b"")
        .await
        .expect("shed");
    assert_eq!(status, 202, "{body}");
    let answer = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("shed ends the stream")
        .expect("reader")
        .expect("head");
    let (events, retry) = check_events(&answer.body, 1).expect("whole events");
    assert!(retry <= 200);
    // The client comes back with the last id it saw and gets the next one first.
    let mut again = Conn::open(proxy.listen).await.expect("reconnect");
    again
        .send("/sse", &format!("{extra}Last-Event-ID: {events}\r\n"))
        .await
        .expect("send");
    let mut seen = Vec::new();
    // The stream runs on; its first event is all this checks.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        again.answer(|d| seen.extend_from_slice(d)),
    )
    .await;
    let want = format!("id: {}\ndata: event {}\n\n", events + 1, events + 1);
    assert!(
        String::from_utf8_lossy(&seen).starts_with(&want),
        "first event after reconnecting: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// A raw app that answers one SSE request by hand: `head` chunks written as they are,
/// then the socket dropped (the app going away mid-stream).
async fn one_shot_sse_app(chunks: Vec<Vec<u8>>, then_wait: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await;
        for c in chunks {
            let _ = s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await;
            let _ = s.write_all(&c).await;
            let _ = s.write_all(b"\r\n").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(then_wait).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_going_away_mid_event_ends_the_sse_stream_with_a_retry_and_no_partial_event() {
    // Through hyper, and off it (the first request of an EventSource).
    for extra in ["", EVENT_SOURCE] {
        the_app_going_away_mid_event_ends_the_sse_stream_with_a_retry_and_no_partial_event_case(
            extra,
        )
        .await;
    }
}

async fn the_app_going_away_mid_event_ends_the_sse_stream_with_a_retry_and_no_partial_event_case(
    extra: &str,
) {
    let app = one_shot_sse_app(
        vec![
            b"id: 1\ndata: event 1\n\n".to_vec(),
            b"id: 2\ndata: ev".to_vec(),
        ],
        Duration::from_millis(200),
    )
    .await;
    let (proxy, _log) = start_proxy(app, &["--reconnect-jitter", "2s"]).await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/", extra).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(5), conn.answer(|_| {}))
        .await
        .expect("the stream ends")
        .expect("head");
    assert!(answer.complete, "a clean end, not a reset: {answer:?}");
    let text = String::from_utf8_lossy(&answer.body).to_string();
    let rest = text
        .strip_prefix("id: 1\ndata: event 1\n\nid: 2\ndata: ev\nretry: ")
        .unwrap_or_else(|| panic!("unexpected stream {text:?}"));
    // No blank line after the hint: the open event 2 is discarded, not dispatched cut.
    let hint: u32 = rest
        .strip_suffix('\n')
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("retry line {rest:?}"));
    assert!(hint <= 2000);
    assert_eq!(
        proxy
            .metric_reaching("wsdrain_sse_streams_active", 0.0, Duration::from_secs(2))
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_event_without_a_boundary_passes_through_without_growing_memory() {
    // Through hyper, and off it (the first request of an EventSource).
    for extra in ["", EVENT_SOURCE] {
        a_1_mib_event_without_a_boundary_passes_through_without_growing_memory_case(extra).await;
    }
}

async fn a_1_mib_event_without_a_boundary_passes_through_without_growing_memory_case(extra: &str) {
    // The close comes while a 1 MiB event is under way: it waits for the boundary,
    // and the event streams through in pieces instead of being held.
    let mut chunks = vec![b"id: 1\ndata: ".to_vec()];
    chunks.extend((0..64).map(|_| vec![b'x'; 16 << 10]));
    chunks.push(b"\n\n".to_vec());
    let app = one_shot_sse_app(chunks, Duration::from_secs(5)).await;
    let (proxy, _log) = start_proxy(
        app,
        &[
            "--drain-delay",
            "0s",
            "--drain-window",
            "100ms",
            "--reconnect-jitter",
            "1s",
        ],
    )
    .await;
    let before = rss_kib(proxy.child.id());
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/", extra).await.expect("send");
    let mut first = Some(());
    let admin = proxy.admin;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        conn.answer(|_| {
            if first.take().is_some() {
                tokio::spawn(async move { http(admin, "POST", "/drain", &[], b"").await });
            }
        }),
    )
    .await
    .expect("the stream ends after the event")
    .expect("head");
    let after = rss_kib(proxy.child.id());
    assert!(answer.complete, "{} bytes", answer.body.len());
    let text = String::from_utf8_lossy(&answer.body);
    let hint = text
        .strip_prefix("id: 1\ndata: ")
        .and_then(|t| t.strip_prefix(&*"x".repeat(1 << 20)))
        .and_then(|t| t.strip_prefix("\n\nretry: "))
        .and_then(|t| t.strip_suffix("\n\n"))
        .and_then(|h| h.parse::<u32>().ok());
    assert!(
        hint.is_some_and(|h| h <= 1000),
        "the whole event, then the hint: {:?}",
        &text[text.len().saturating_sub(30)..]
    );
    assert!(
        after.saturating_sub(before) < 2048,
        "wsdrain grew {} KiB for a 1 MiB event",
        after.saturating_sub(before)
    );
}

/// Resident KiB the proxy grows by per connection once `n` connections sit idle.
async fn growth_per_connection(proxy: &Proxy, n: usize, before: u64) -> f64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(proxy.child.id());
    after.saturating_sub(before) as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sse_stream_costs_a_bounded_amount_measured_against_an_idle_websocket() {
    let n = std::env::var("WSDRAIN_IDLE_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300usize);
    // SSE: the app sends one event, then nothing (an idle stream).
    let sse_app = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut head = [0u8; 2048];
                    let _ = s.read(&mut head).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ndata: hello!!!\n\n\r\n").await;
                    tokio::time::sleep(Duration::from_secs(120)).await;
                });
            }
        });
        addr
    };
    let (sse_proxy, _log) = start_proxy(sse_app, &["--max-connections", "5000"]).await;
    let warm = Conn::open(sse_proxy.listen).await.expect("warm-up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(sse_proxy.child.id());
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut c = Conn::open(sse_proxy.listen).await.expect("connect");
        c.send("/", EVENT_SOURCE).await.expect("send");
        streams.push(c);
    }
    for c in &mut streams {
        while find(&c.buf, b"hello").is_none() {
            assert!(c.fill().await.expect("read"), "stream ended");
        }
    }
    let sse = growth_per_connection(&sse_proxy, n, before).await;
    drop((streams, warm));

    let app = common::EchoApp::start().await;
    let (ws_proxy, _log) = start_proxy(app.addr, &["--max-connections", "5000"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(ws_proxy.child.id());
    let mut sockets = Vec::new();
    for _ in 0..n {
        let (ws, _) = tokio_tungstenite::connect_async(ws_proxy.url("/"))
            .await
            .expect("ws");
        sockets.push(ws);
    }
    let ws = growth_per_connection(&ws_proxy, n, before).await;
    println!("idle per connection over {n}: SSE {sse:.1} KiB, WebSocket {ws:.1} KiB");
    // An EventSource's stream is served off hyper (whose two HTTP/1.1 connections
    // kept about 35 KiB per stream): it borrows buffers only while bytes move, as a
    // WebSocket relay does. A debug build's futures are larger, hence the margin.
    assert!(
        sse <= ws + 3.0,
        "an idle SSE stream costs {sse:.1} KiB (an idle WebSocket {ws:.1} KiB)"
    );
    assert!(ws > 0.0, "the WebSocket side was measured");
}

/// Seconds of the day of a log line's timestamp (`2026-01-01T12:34:56.789012Z ...`).
fn log_seconds(line: &str) -> Option<f64> {
    let time = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_spread_over_the_window() {
    let app = start_app().await;
    let (mut child, listen, admin) = spawn_proxy(Launch {
        upstream: app,
        extra: &[
            "--drain-delay",
            "0s",
            "--drain-window",
            "2s",
            "--close-timeout",
            "2s",
        ],
        log_level: "debug",
        nofile: None,
        stderr: Stdio::piped(),
    })
    .await;
    let log = capture_stderr(&mut child);
    let proxy = Proxy {
        child,
        listen,
        admin,
    };
    // 20 keep-alive connections, each with one answer behind it, then idle for over 1 s.
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = Conn::open(proxy.listen).await.expect("connect");
        c.send("/4k", "").await.expect("send");
        let a = c.answer(|_| {}).await.expect("answer");
        assert!(a.complete && !a.closes());
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("POST /drain");
    assert_eq!(status, 202);
    let waits: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(6), c.fill())
                    .await
                    .map(|r| r.ok())
            })
        })
        .collect();
    for w in waits {
        let eof = w.await.expect("task");
        assert_eq!(
            eof,
            Ok(Some(false)),
            "a clean close (FIN) within 6 s, no bytes"
        );
    }
    // When wsdrain closed each one, from its own log (this process's clock would also
    // measure how the box scheduled it).
    let text = log.lock().expect("log").clone();
    let mut turns: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("keep-alive connection's turn to close"))
        .filter_map(log_seconds)
        .collect();
    turns.sort_by(f64::total_cmp);
    assert_eq!(turns.len(), 20, "every idle connection closed at its turn");
    let spread = turns[19] - turns[0];
    assert!(
        (1.2..=2.5).contains(&spread),
        "closes spread over the 2 s window, not all at once: {spread:.2} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_ends_an_sse_stream_at_a_boundary_with_a_retry() {
    // Through hyper, and off it (the first request of an EventSource).
    for extra in ["", EVENT_SOURCE] {
        max_connection_age_ends_an_sse_stream_at_a_boundary_with_a_retry_case(extra).await;
    }
}

async fn max_connection_age_ends_an_sse_stream_at_a_boundary_with_a_retry_case(extra: &str) {
    let app = start_app().await;
    let (proxy, _log) = start_proxy(
        app,
        &[
            "--max-connection-age",
            "1s",
            "--max-connection-age-jitter",
            "0s",
            "--reconnect-jitter",
            "500ms",
        ],
    )
    .await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/sse", extra).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(10), conn.answer(|_| {}))
        .await
        .expect("the stream is retired for its age")
        .expect("head");
    assert!(answer.complete, "a clean end: {answer:?}");
    // Off hyper the body goes out close-delimited (the hint can go in anywhere).
    assert_eq!(
        answer.header("transfer-encoding").is_none(),
        extra == EVENT_SOURCE,
        "{extra:?}: {}",
        answer.head
    );
    let (events, retry) = check_events(&answer.body, 1).expect("whole events");
    assert!(
        events >= 10,
        "the stream ran about a second: {events} events"
    );
    assert!(retry <= 500);
    assert_eq!(
        proxy
            .metric("wsdrain_rebalance_closed_total{reason=\"max_age\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_sse_streams_share_one_staggered_drain() {
    let app = start_app().await;
    let ws_app = common::EchoApp::start().await;
    // wsdrain has one upstream: a tiny router behind it sends upgrades to the echo app
    // and everything else (the event streams) to the hyper app.
    let router = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sse, ws) = (app, ws_app.addr);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut head = vec![0u8; 4096];
                    let Ok(n) = client.peek(&mut head).await else {
                        return;
                    };
                    let upgrade = String::from_utf8_lossy(&head[..n])
                        .to_ascii_lowercase()
                        .contains("upgrade: websocket");
                    let Ok(mut app) = TcpStream::connect(if upgrade { ws } else { sse }).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                });
            }
        });
        addr
    };
    let (mut proxy, _log) = start_proxy(
        router,
        &[
            "--drain-delay",
            "100ms",
            "--drain-window",
            "1s",
            "--reconnect-jitter",
            "1s",
            "--close-timeout",
            "3s",
        ],
    )
    .await;
    let mut sse = Vec::new();
    for _ in 0..10 {
        let mut c = Conn::open(proxy.listen).await.expect("connect");
        c.send("/sse", "").await.expect("send");
        sse.push(tokio::spawn(async move { c.answer(|_| {}).await }));
    }
    let ws = common::clients::connect_clients(&proxy, 10, Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(proxy.admin, "GET", "/drain", &[], b"")
            .await
            .expect("GET /drain");
        let status: serde_json::Value = serde_json::from_str(&body).expect("json");
        if status["open"] == 20 && status["sse_open"] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "not all open: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.signal("TERM");
    let mut hints = Vec::new();
    for t in sse {
        let answer = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("SSE ends")
            .expect("task")
            .expect("head");
        let (_, retry) = check_events(&answer.body, 1).expect("whole events");
        hints.push(retry);
    }
    let reports = common::clients::collect(ws, Duration::from_secs(10)).await;
    for r in &reports {
        assert!(r.error.is_none(), "{:?}", r.error);
        let (code, reason) = r.close.clone().expect("a close frame");
        assert_eq!(code, 1012);
        hints.push(
            common::clients::hint_of(&reason)
                .and_then(|h| u32::try_from(h).ok())
                .expect("hint"),
        );
    }
    // One stratified sequence over both kinds: 20 distinct hints within the jitter.
    hints.sort();
    hints.dedup();
    assert!(hints.len() >= 18, "{hints:?}");
    assert!(hints.iter().all(|h| *h <= 1000));
    assert_eq!(proxy.wait_exit(Duration::from_secs(5)), Some(0));
}

/// An SSE stream the drain has no place for (beyond `--max-connections`, or after the
/// drain sealed the registry) ends at once with a hint; an operator sees how many, and
/// why, as for refused upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_without_a_place_end_at_once_with_a_retry_and_are_counted_by_reason() {
    // Through hyper, and off it (the first request of an EventSource).
    for extra in ["", EVENT_SOURCE] {
        sse_streams_without_a_place_end_at_once_with_a_retry_and_are_counted_by_reason_case(extra)
            .await;
    }
}

async fn sse_streams_without_a_place_end_at_once_with_a_retry_and_are_counted_by_reason_case(
    extra: &str,
) {
    let app = start_app().await;
    let (proxy, _log) = start_proxy(
        app,
        &[
            "--max-connections",
            "1",
            "--drain-delay",
            "0s",
            "--drain-window",
            "5s",
            "--reconnect-jitter",
            "500ms",
        ],
    )
    .await;
    let mut held = Conn::open(proxy.listen).await.expect("connect");
    held.send("/sse", extra).await.expect("send");
    while find(&held.buf, b"data: event 1").is_none() {
        assert!(held.fill().await.expect("read"), "the first stream ended");
    }
    let refused = |reason: &'static str| {
        let proxy_listen = proxy.listen;
        async move {
            let mut conn = Conn::open(proxy_listen).await.expect("connect");
            conn.send("/sse", extra).await.expect("send");
            let answer = tokio::time::timeout(Duration::from_secs(5), conn.answer(|_| {}))
                .await
                .unwrap_or_else(|_| panic!("a stream refused for {reason} ends at once"))
                .expect("head");
            assert!(answer.complete, "a clean end ({reason}): {answer:?}");
            let (_, retry) = check_events(&answer.body, 1).expect("whole events");
            assert!(retry <= 500, "{reason}: retry {retry}");
        }
    };
    refused("max_connections").await;
    let series = |reason| format!("wsdrain_sse_streams_refused_total{{reason=\"{reason}\"}}");
    assert_eq!(proxy.metric(&series("max_connections")).await, 1.0);
    assert_eq!(proxy.metric(&series("draining")).await, 0.0);

    let (status, _) = http(proxy.admin, "POST", "/drain", &[], b"")
        .await
        .expect("POST /drain");
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    refused("draining").await;
    assert_eq!(proxy.metric(&series("draining")).await, 1.0);
    assert_eq!(proxy.metric(&series("max_connections")).await, 1.0);
    drop(held);
}

/// An EventSource's request is served off hyper; whatever the app answers that is not
/// an event stream (a plain body, a 404, no app at all) still reaches the client whole
/// and well framed, and the connection closes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_request_answered_with_something_else_gets_that_answer_whole() {
    let app = start_app().await;
    let (proxy, _log) = start_proxy(app, &[]).await;
    for (path, status, len) in [
        ("/10k", "200", 10240),
        ("/4k", "200", 4096),
        ("/nope", "404", 0),
    ] {
        let mut conn = Conn::open(proxy.listen).await.expect("connect");
        conn.send(path, EVENT_SOURCE).await.expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(10), conn.answer(|_| {}))
            .await
            .expect("answered")
            .expect("head");
        assert!(
            answer.head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {}",
            answer.head
        );
        assert!(
            answer.complete && answer.body.len() == len,
            "{path}: {} bytes",
            answer.body.len()
        );
        assert!(answer.closes(), "{path}: {}", answer.head);
        assert!(
            !matches!(conn.fill().await, Ok(true)),
            "{path}: the connection ends after the answer"
        );
    }
    assert_eq!(
        proxy
            .metric("wsdrain_http_requests_total{code=\"2xx\"}")
            .await,
        2.0
    );
    assert_eq!(
        proxy
            .metric("wsdrain_http_requests_total{code=\"4xx\"}")
            .await,
        1.0
    );

    // No app: a 502 of wsdrain's own, as on the hyper path.
    let gone = common::free_addr();
    let (proxy, _log) = start_proxy(gone, &[]).await;
    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    conn.send("/sse", EVENT_SOURCE).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(10), conn.answer(|_| {}))
        .await
        .expect("answered")
        .expect("head");
    assert!(answer.head.starts_with("HTTP/1.1 502 "), "{}", answer.head);
    assert!(answer.complete, "{answer:?}");
    assert!(String::from_utf8_lossy(&answer.body).contains("unreachable"));
}
