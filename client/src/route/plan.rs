//! The routing plan: which route a command takes through the cluster. One
//! function decides it for the node routing its clients' commands and for
//! the Rust client's direct mode, so the two never disagree.

use zonecache_proto::{Command, MetaFlags, StoreMode};

/// A command's way through the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `get`/`gets`/`gat`/`gats`: one request per owner in the home zone;
    /// only the keys still missing go on to the next zone.
    MultiRead,
    /// `mg`: the home owner, then the other zones while it misses.
    MetaRead,
    /// A plain write (`set`, `ms` in set mode, `delete`, `touch`, plain
    /// `md`): to the owner in every zone at once, acknowledged per the write
    /// policy. `stamp`: the write gets one cluster-wide version first, so
    /// every zone's copy has the same one and a delete leaves a tombstone
    /// with it (a text `set` travels as `ms … E`, a `delete` as `md … E`).
    /// A `set`/`ms` rejected as too large travels as a delete: memcached
    /// drops the old value of a store it rejects, so no zone may keep it.
    FanOut { stamp: bool },
    /// A conditional write (`add`, `replace`, `append`, `prepend`, `cas`,
    /// `incr`, `decr`, `ma`, `ms` with a mode or `C`, `md` with `C`/`I`/`x`):
    /// decided by the arbiter, then the result is copied to the other zones
    /// — as a delete when `deletes`, else as the resulting item.
    Arbitrate { deletes: bool },
    /// `flush_all`: every node of every zone.
    Everywhere,
    /// `zc_lease <node>`: replay this router's hints for that node, then
    /// grant it a read lease (`fence.rs`).
    Lease,
    /// `zc_asked <node>`: how long ago that node last asked this router
    /// for a lease (`fence.rs`).
    Asked,
    /// `zc_drain <zone> <percent>`: set a zone's drain weight (`drain.rs`).
    Drain,
    /// Answered by the node that received it (`stats`, `version`, `mn`,
    /// errors, …).
    Local,
}

impl Route {
    /// Whether the command is answered where it arrives, without routing.
    pub fn is_local(self) -> bool {
        self == Route::Local
    }
}

/// The route `cmd` takes.
pub fn plan(cmd: &Command) -> Route {
    match cmd {
        Command::Get { .. } | Command::Gat { .. } => Route::MultiRead,
        Command::MetaGet(_) => Route::MetaRead,
        Command::Store(s) if s.mode == StoreMode::Set => Route::FanOut { stamp: true },
        Command::MetaSet { meta, .. } if is_plain_set(&meta.flags) => Route::FanOut { stamp: true },
        Command::Delete { .. } => Route::FanOut { stamp: true },
        Command::Touch { .. } => Route::FanOut { stamp: false },
        Command::MetaDelete(meta) if is_plain_delete(&meta.flags) => Route::FanOut { stamp: true },
        Command::MetaDelete(meta) => Route::Arbitrate {
            deletes: !meta.flags.invalidate && !meta.flags.remove_value,
        },
        Command::Store(_)
        | Command::Arith { .. }
        | Command::MetaSet { .. }
        | Command::MetaArith(_) => Route::Arbitrate { deletes: false },
        Command::TooLarge {
            remove_existing: true,
            ..
        } => Route::FanOut { stamp: true },
        Command::FlushAll { .. } => Route::Everywhere,
        Command::PeerLease { .. } => Route::Lease,
        Command::PeerAsked { .. } => Route::Asked,
        Command::PeerDrain { .. } => Route::Drain,
        Command::Version
        | Command::Verbosity { .. }
        | Command::CacheMemlimit { .. }
        | Command::Shutdown { .. }
        | Command::RefreshCerts { .. }
        | Command::Stats { .. }
        | Command::Quit
        | Command::Close
        | Command::MetaNoop
        | Command::MetaDebug { .. }
        | Command::PeerChallenge { .. }
        | Command::PeerHello { .. }
        | Command::VersionedGet { .. }
        | Command::PeerDump { .. }
        | Command::KeyDump { .. }
        | Command::Leave
        | Command::TooLarge { .. }
        | Command::Invalid(_) => Route::Local,
    }
}

fn is_plain_set(f: &MetaFlags) -> bool {
    matches!(f.mode, None | Some(b'S')) && f.compare_cas.is_none() && !f.invalidate
}

fn is_plain_delete(f: &MetaFlags) -> bool {
    f.compare_cas.is_none() && !f.invalidate && !f.remove_value
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonecache_proto::{ParserConfig, RequestParser};

    fn route(line: &str) -> Route {
        let mut buf = bytes::BytesMut::from(line);
        let cmd = RequestParser::new(ParserConfig::default())
            .parse(&mut buf)
            .unwrap()
            .unwrap();
        plan(&cmd)
    }

    #[test]
    fn reads_fall_back_and_plain_writes_fan_out() {
        assert_eq!(route("get a b\r\n"), Route::MultiRead);
        assert_eq!(route("gats 10 a\r\n"), Route::MultiRead);
        assert_eq!(route("mg a v\r\n"), Route::MetaRead);
        assert_eq!(route("set a 0 0 1\r\nx\r\n"), Route::FanOut { stamp: true });
        assert_eq!(route("ms a 1 T5\r\nx\r\n"), Route::FanOut { stamp: true });
        assert_eq!(route("delete a\r\n"), Route::FanOut { stamp: true });
        assert_eq!(route("touch a 5\r\n"), Route::FanOut { stamp: false });
        assert_eq!(route("md a q\r\n"), Route::FanOut { stamp: true });
        // Refused once the data block is in, as memcached answers.
        let block = "x".repeat(2 << 20);
        let too_large = format!("set a 0 0 {}\r\n{block}\r\n", 2 << 20);
        assert_eq!(route(&too_large), Route::FanOut { stamp: true });
        let add_too_large = format!("add a 0 0 {}\r\n{block}\r\n", 2 << 20);
        assert!(
            route(&add_too_large).is_local(),
            "memcached keeps the old value"
        );
    }

    #[test]
    fn conditional_writes_go_to_the_arbiter() {
        let item = Route::Arbitrate { deletes: false };
        for line in [
            "add a 0 0 1\r\nx\r\n",
            "cas a 0 0 1 7\r\nx\r\n",
            "append a 0 0 1\r\nx\r\n",
            "incr a 1\r\n",
            "ma a\r\n",
            "ms a 1 ME\r\nx\r\n",
            "ms a 1 C5\r\nx\r\n",
            "md a I\r\n",
        ] {
            assert_eq!(route(line), item, "{line:?}");
        }
        assert_eq!(route("md a C5\r\n"), Route::Arbitrate { deletes: true });
    }

    #[test]
    fn the_rest_is_answered_where_it_arrives() {
        assert_eq!(route("flush_all\r\n"), Route::Everywhere);
        for line in [
            "stats\r\n",
            "version\r\n",
            "mn\r\n",
            "bogus\r\n",
            "zc_peer 00\r\n",
            "zc_challenge 00\r\n",
        ] {
            assert!(route(line).is_local(), "{line:?}");
        }
    }
}
