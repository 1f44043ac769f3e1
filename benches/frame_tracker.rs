//! Criterion micro-benchmark of the header-only frame tracker, in bytes per second
//! over realistic mixes. Reads are replayed the way the relay does it: each read is fed
//! with the unconsumed tail of the previous one (an incomplete header or control frame)
//! in front of it.
//!
//! `cargo bench --bench frame_tracker`; under `cargo test --benches` criterion runs each
//! case once.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsdrain::frame_tracker::{FrameTracker, StopAt};

/// A tiny deterministic generator (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() as usize) % (hi - lo + 1)
    }
}

fn push_frame(out: &mut Vec<u8>, b0: u8, len: usize, masked: bool) {
    out.push(b0);
    let m = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    }
    out.extend((0..len).map(|i| i as u8));
}

/// About `total` bytes of frames made by `make`.
fn stream(total: usize, mut make: impl FnMut(&mut Vec<u8>)) -> Vec<u8> {
    let mut s = Vec::with_capacity(total + 70_000);
    while s.len() < total {
        make(&mut s);
    }
    s
}

/// Feeds `data` in reads of the sizes `reads` yields, carrying the unconsumed tail.
fn replay(data: &[u8], reads: &[usize]) -> u64 {
    let mut t = FrameTracker::new(0);
    let mut start = 0usize;
    let mut end = 0usize;
    let mut msgs = 0u64;
    let mut i = 0;
    while end < data.len() {
        end = (end + reads[i % reads.len()]).min(data.len());
        i += 1;
        let f = t.feed(&data[start..end], StopAt::Never);
        start += f.consumed;
        msgs += u64::from(f.messages);
    }
    msgs
}

fn bench(c: &mut Criterion) {
    const TOTAL: usize = 4 << 20;
    const READ: usize = 16 * 1024; // the relay's buffer size
    let mut rng = Lcg(42);

    let small_masked = stream(TOTAL, |s| push_frame(s, 0x82, 64, true));
    let small_unmasked = stream(TOTAL, |s| push_frame(s, 0x82, 64, false));
    let large = stream(TOTAL, |s| push_frame(s, 0x82, 64 * 1024, true));
    let huge = stream(TOTAL, |s| push_frame(s, 0x82, 1 << 20, false));
    // Chat-like: mostly short text, some kilobyte messages, a few fragmented ones and
    // pings, masked (client to app).
    let mixed = stream(TOTAL, |s| match rng.range(0, 99) {
        0..=69 => {
            let n = rng.range(16, 200);
            push_frame(s, 0x81, n, true)
        }
        70..=89 => {
            let n = rng.range(200, 4096);
            push_frame(s, 0x82, n, true)
        }
        90..=94 => {
            push_frame(s, 0x01, 1000, true);
            push_frame(s, 0x00, 1000, true);
            push_frame(s, 0x80, 500, true);
        }
        _ => push_frame(s, 0x89, 4, true),
    });
    let mut rng = Lcg(7);
    let split_reads: Vec<usize> = (0..4096).map(|_| rng.range(1, 1500)).collect();

    let cases: Vec<(&str, &[u8], Vec<usize>)> = vec![
        ("small_64B_masked/16KiB_reads", &small_masked, vec![READ]),
        (
            "small_64B_unmasked/16KiB_reads",
            &small_unmasked,
            vec![READ],
        ),
        (
            "small_64B_masked/split_1-1500B_reads",
            &small_masked,
            split_reads.clone(),
        ),
        ("large_64KiB_masked/16KiB_reads", &large, vec![READ]),
        ("large_1MiB/16KiB_reads", &huge, vec![READ]),
        (
            "large_64KiB_masked/split_1-1500B_reads",
            &large,
            split_reads.clone(),
        ),
        ("mixed_chat/16KiB_reads", &mixed, vec![READ]),
        ("mixed_chat/split_1-1500B_reads", &mixed, split_reads),
    ];
    let mut g = c.benchmark_group("frame_tracker");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (name, data, reads) in &cases {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| replay(black_box(data), black_box(reads)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
