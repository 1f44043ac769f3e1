//! A measurement prototype, not part of wsdrain: a passthrough TCP relay on io_uring, to
//! see what fewer kernel crossings per message would buy before anyone rewrites
//! `src/relay/pump.rs` on a completion-based interface (issue 17, docs/performance.md
//! "An io_uring relay, as a prototype").
//!
//! One ring per thread (as many threads as CPUs), each with its own `SO_REUSEPORT`
//! listener; per connection one receive outstanding per direction and a send when it
//! completes, so every loop turn submits all connections' operations in one
//! `io_uring_enter`. No WebSocket framing, no drain, no metrics, a fixed 16 KiB buffer per
//! direction: the ceiling of the approach, not a relay to run. It takes wsdrain's
//! `proxy --listen A --upstream B ...` arguments (ignoring the others), so the proxies
//! bench can run it as its A/B contender:
//!   WSDRAIN_BIN_B=benches/uring_relay/target/release/wsdrain-uring-relay-prototype \
//!   WSDRAIN_BENCH_CONTENDERS=wsdrain,wsdrain-b,haproxy,tcp-relay \
//!   WSDRAIN_BENCH_SCENARIOS=small_50,small_1000 WSDRAIN_BENCH_ONLY=load \
//!   WSDRAIN_BENCH_ROUNDS=7 cargo bench --bench proxies
use io_uring::{IoUring, opcode, squeue, types};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};

const BUF: usize = 16 * 1024;
const ACCEPT: u64 = u64::MAX;

struct Conn {
    fds: [RawFd; 2],      // 0 = client, 1 = app
    bufs: [Box<[u8]>; 2], // bufs[d]: data read from fds[d], to be sent to fds[1-d]
    len: [usize; 2],
    sent: [usize; 2],
    inflight: u32,
    closing: bool,
}

fn ud(idx: usize, op: u64, dir: usize) -> u64 {
    ((idx as u64) << 2) | (op << 1) | dir as u64
}

fn push(ring: &mut IoUring, e: squeue::Entry) {
    loop {
        // SAFETY: the buffers an entry points at live in `conns` until its completion.
        if unsafe { ring.submission().push(&e) }.is_ok() {
            return;
        }
        ring.submit().expect("submit");
    }
}

fn recv(ring: &mut IoUring, c: &mut Conn, idx: usize, d: usize) {
    let b = &mut c.bufs[d];
    let e = opcode::Recv::new(types::Fd(c.fds[d]), b.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(ud(idx, 0, d));
    c.inflight += 1;
    push(ring, e);
}

fn send(ring: &mut IoUring, c: &mut Conn, idx: usize, d: usize) {
    let b = &c.bufs[d][c.sent[d]..c.len[d]];
    let e = opcode::Send::new(types::Fd(c.fds[1 - d]), b.as_ptr(), b.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(ud(idx, 1, d));
    c.inflight += 1;
    push(ring, e);
}

fn close(c: &mut Conn) {
    if !c.closing {
        c.closing = true;
        for fd in c.fds {
            // SAFETY: plain syscall on descriptors this connection owns; in-flight
            // receives complete with 0 and the connection is freed when none is left.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

fn serve(listen: SocketAddr, upstream: SocketAddr) {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.set_reuse_address(true).ok();
    sock.set_reuse_port(true).expect("reuseport");
    sock.bind(&listen.into()).expect("bind");
    sock.listen(4096).expect("listen");
    let lfd = sock.into_raw_fd();
    let mut ring = IoUring::new(4096).expect("ring");
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let accept = |ring: &mut IoUring| {
        push(
            ring,
            opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
                .build()
                .user_data(ACCEPT),
        );
    };
    accept(&mut ring);
    loop {
        ring.submit_and_wait(1).expect("submit_and_wait");
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, res) in done {
            if data == ACCEPT {
                accept(&mut ring);
                if res < 0 {
                    continue;
                }
                let client = res;
                let Ok(app) = TcpStream::connect(upstream) else {
                    // SAFETY: the accepted descriptor is ours and nothing uses it yet.
                    unsafe { libc::close(client) };
                    continue;
                };
                app.set_nodelay(true).ok();
                let one: libc::c_int = 1;
                // SAFETY: a 4-byte int option on a descriptor we own.
                unsafe {
                    libc::setsockopt(
                        client,
                        libc::IPPROTO_TCP,
                        libc::TCP_NODELAY,
                        &one as *const _ as *const _,
                        4,
                    );
                }
                let c = Conn {
                    fds: [client, app.into_raw_fd()],
                    bufs: [
                        vec![0; BUF].into_boxed_slice(),
                        vec![0; BUF].into_boxed_slice(),
                    ],
                    len: [0; 2],
                    sent: [0; 2],
                    inflight: 0,
                    closing: false,
                };
                let idx = free.pop().unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                conns[idx] = Some(c);
                let c = conns[idx].as_mut().unwrap();
                recv(&mut ring, c, idx, 0);
                recv(&mut ring, c, idx, 1);
                continue;
            }
            let idx = (data >> 2) as usize;
            let op = (data >> 1) & 1;
            let d = (data & 1) as usize;
            let c = conns[idx].as_mut().expect("live conn");
            c.inflight -= 1;
            if c.closing || res <= 0 {
                close(c);
                if c.inflight == 0 {
                    for fd in c.fds {
                        unsafe { libc::close(fd) };
                    }
                    conns[idx] = None;
                    free.push(idx);
                }
                continue;
            }
            if op == 0 {
                c.len[d] = res as usize;
                c.sent[d] = 0;
                send(&mut ring, c, idx, d);
            } else {
                c.sent[d] += res as usize;
                if c.sent[d] < c.len[d] {
                    send(&mut ring, c, idx, d);
                } else {
                    recv(&mut ring, c, idx, d);
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("{flag} ADDR"))
    };
    let (listen, upstream) = (get("--listen"), get("--upstream"));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || serve(listen, upstream)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
