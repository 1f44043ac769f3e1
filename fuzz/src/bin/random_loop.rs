//! Stable-toolchain stand-in for cargo-fuzz: a bounded, seeded random mutation loop over
//! the same checks as the fuzz targets. Not coverage-guided; it exists so the checks run
//! where nightly or cargo-fuzz is missing.
//!
//! usage: random-loop <frame_tracker|request_head|proxy_protocol|sse_tracker|tls_accept> <seconds> [seed-dir]

use std::panic;
use std::time::{Duration, Instant};

const TOKENS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"Host: x\r\n",
    b"Connection: Upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"0\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\x81\x85",
    b"\x88\x82\x03\xe8",
    b"\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff",
    b"\x89\x00",
    b"data: ",
    b"id: ",
    b"retry: ",
    b"\n\n",
    b"\r",
    b"\n",
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"\r\n\r\n\x00\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x20\x00\x00\x00",
    b"\x21\x31\x00\xd8",
    b"\x16\x03\x01",
    b"\x16\x03\x03\x00\x00",
    b"\x01\x00\x00",
    b"\x00\x10\x00\x0b\x00\x09\x08http/1.1",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = if seeds.is_empty() || rng.below(8) == 0 {
        (0..rng.below(300)).map(|_| rng.next() as u8).collect()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(d.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(i..i, t.iter().copied());
            }
            3 if !d.is_empty() => {
                let i = rng.below(d.len());
                d.truncate(i);
            }
            4 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let i = rng.below(d.len() + 1);
                let j = rng.below(other.len() + 1);
                d.splice(i..i, other[..j].iter().copied());
            }
            _ if !d.is_empty() => {
                let i = rng.below(d.len());
                let n = rng.below(d.len() - i + 1);
                d.drain(i..i + n);
            }
            _ => {}
        }
    }
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target = args.get(1).map(String::as_str).unwrap_or("frame_tracker");
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let seeds: Vec<Vec<u8>> = args
        .get(3)
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let check: fn(&[u8]) = match target {
        "frame_tracker" => wsdrain_fuzz::check_frame_tracker,
        "request_head" => wsdrain_fuzz::check_request_head,
        "proxy_protocol" => wsdrain_fuzz::check_proxy_protocol,
        "sse_tracker" => wsdrain_fuzz::check_sse_tracker,
        "dechunk" => wsdrain_fuzz::check_dechunk,
        "tls_accept" => wsdrain_fuzz::check_tls_accept,
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    };
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let input = mutate(&mut rng, &seeds);
        if panic::catch_unwind(|| check(&input)).is_err() {
            let path = format!("crash-{target}-{runs}.bin");
            let _ = std::fs::write(&path, &input);
            eprintln!("random-loop: {target}: crash after {runs} runs; input saved to {path}");
            std::process::exit(1);
        }
        runs += 1;
    }
    println!("random-loop: {target}: {runs} runs in {secs} s, no crash");
}
