//! Feeds arbitrary bytes, in arbitrary pieces, to the request parser: it must
//! never panic, always consume input when it yields a request, and keep its
//! buffer bounded.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zonecache_proto::{ParserConfig, RequestParser};

fuzz_target!(|data: &[u8]| {
    let config = ParserConfig {
        item_size_max: 4096,
        max_get_line: 16 * 1024,
    };
    let mut parser = RequestParser::new(config);
    let mut buf = BytesMut::new();
    // The first byte picks the chunk size, so splits are explored too.
    let (chunk, input) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c).max(1), rest),
        None => return,
    };
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before || before == 0),
                Ok(None) => break,
                Err(_) => return, // the server closes the connection
            }
        }
        assert!(buf.len() <= config.max_get_line + config.item_size_max + chunk);
    }
});
