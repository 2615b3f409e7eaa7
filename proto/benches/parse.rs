//! Parsing speed: a pipelined stream of small `get` and `set` requests.
//! Run with `cargo bench -p zonecache-proto --bench parse`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zonecache_proto::{ParserConfig, RequestParser};

fn stream(count: usize, set_every: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..count {
        if set_every > 0 && i % set_every == 0 {
            buf.extend_from_slice(format!("set key:{i:08} 0 0 32\r\n").as_bytes());
            buf.extend_from_slice(&[b'x'; 32]);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(format!("get key:{i:08}\r\n").as_bytes());
        }
    }
    buf
}

fn parse_all(parser: &mut RequestParser, input: &BytesMut) -> usize {
    let mut buf = input.clone();
    let mut n = 0;
    while let Ok(Some(cmd)) = parser.parse(&mut buf) {
        criterion::black_box(cmd);
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    const COUNT: usize = 10_000;
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(COUNT as u64));
    let gets = stream(COUNT, 0);
    let mixed = stream(COUNT, 10);
    let mut parser = RequestParser::new(ParserConfig::default());
    group.bench_function("pipelined_gets", |b| {
        b.iter(|| assert_eq!(parse_all(&mut parser, &gets), COUNT))
    });
    group.bench_function("pipelined_90get_10set", |b| {
        b.iter(|| assert_eq!(parse_all(&mut parser, &mixed), COUNT))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
