//! The client's writes: each becomes one command that the router runs on
//! the route the shared plan gives it (direct mode), or that a home-zone
//! node routes (front mode).

use bytes::Bytes;
use tracing::Instrument;
use zonecache_proto::{Command, Response, Store, StoreMode};

use super::{checked_key, exported, stored, Client, Mode, StoreOptions};
use crate::error::Error;
use crate::route::{Kind, Transport};

impl Client {
    /// Sends `cmd` to the key's home owner as a front; when it does not
    /// answer, to the next nodes of the home zone.
    pub(super) async fn through_front(
        &self,
        key: &[u8],
        cmd: &Command,
        kind: Kind,
    ) -> Result<Response, Error> {
        let view = self.inner.views.current();
        let router = &view.router;
        let home = &router.topology.zones[0];
        // The front tries each zone within its own deadline.
        let deadline = router.deadline(self.lane, kind) * (router.topology.zones.len() as u32 + 1);
        let first = home.ring.owner(key).unwrap_or(0);
        let mut last = Err(Error::Connection("no front reachable".into()));
        for i in 0..home.nodes.len().min(3) {
            let node = &home.nodes[(first + i) % home.nodes.len()];
            last = view.nodes.call(node, cmd, self.lane, deadline).await;
            match &last {
                Err(e) if e.is_unanswered() => continue,
                _ => break,
            }
        }
        last
    }

    /// Runs a single-key write in a span, counting its failure.
    async fn write(&self, op: &'static str, key: &Bytes, cmd: Command) -> Result<Response, Error> {
        let span = tracing::debug_span!(
            "zonecache.write",
            op,
            lane = self.lane.name(),
            outcome = tracing::field::Empty,
        );
        let inner = &self.inner;
        let lane = self.lane;
        let started = std::time::Instant::now();
        async move {
            let result = match inner.mode {
                Mode::Front => self.through_front(key, &cmd, Kind::Write).await,
                Mode::Direct => {
                    let view = inner.views.current();
                    view.router.run(&view.nodes, cmd, lane).await
                }
            };
            match &result {
                Ok(_) => tracing::Span::current().record("outcome", "ok"),
                Err(e) => {
                    self.count_error(e);
                    tracing::Span::current().record("outcome", tracing::field::display(e))
                }
            };
            exported::call(
                op,
                lane,
                exported::write_outcome(&result),
                started.elapsed(),
            );
            result
        }
        .instrument(span)
        .await
    }

    fn store_cmd(
        &self,
        mode: StoreMode,
        key: Bytes,
        value: Bytes,
        opts: StoreOptions,
        cas: u64,
    ) -> Command {
        Command::Store(Store {
            mode,
            key,
            flags: opts.flags,
            exptime: opts.ttl as i32,
            data: value,
            cas_unique: cas,
            noreply: false,
        })
    }

    /// Stores `value` at `key` in every zone (acknowledged per the write
    /// policy). In direct mode across zones every copy gets the same CAS.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        let key = checked_key(key)?;
        let value = value.into();
        // The router stamps it with a cluster-wide CAS (see `route::plan`).
        let cmd = self.store_cmd(StoreMode::Set, key.clone(), value, opts, 0);
        stored(self.write("set", &key, cmd).await)
    }

    async fn conditional_store(
        &self,
        mode: StoreMode,
        key: impl AsRef<[u8]>,
        value: Bytes,
        opts: StoreOptions,
        cas: u64,
    ) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = self.store_cmd(mode, key.clone(), value, opts, cas);
        stored(self.write(mode.name(), &key, cmd).await)
    }

    /// Stores only if `key` is absent ([`Error::NotStored`] otherwise).
    pub async fn add(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Add, key, value.into(), opts, 0)
            .await
    }

    /// Stores only if `key` is present ([`Error::NotStored`] otherwise).
    pub async fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Replace, key, value.into(), opts, 0)
            .await
    }

    /// Adds `value` after the existing one ([`Error::NotStored`] if absent).
    pub async fn append(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.conditional_store(
            StoreMode::Append,
            key,
            value.into(),
            StoreOptions::default(),
            0,
        )
        .await
    }

    /// Adds `value` before the existing one ([`Error::NotStored`] if absent).
    pub async fn prepend(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.conditional_store(
            StoreMode::Prepend,
            key,
            value.into(),
            StoreOptions::default(),
            0,
        )
        .await
    }

    /// Stores only if the item's CAS is still `cas` (from [`Client::gets`]):
    /// [`Error::Exists`] if it changed, [`Error::NotFound`] if it is gone.
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        opts: StoreOptions,
        cas: u64,
    ) -> Result<(), Error> {
        self.conditional_store(StoreMode::Cas, key, value.into(), opts, cas)
            .await
    }

    /// Deletes `key` in every zone ([`Error::NotFound`] if the answering
    /// zone did not have it).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = Command::Delete {
            key: key.clone(),
            noreply: false,
        };
        stored(self.write("delete", &key, cmd).await)
    }

    /// Sets a new expiry on `key` in every zone.
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: u32) -> Result<(), Error> {
        let key = checked_key(key)?;
        let cmd = Command::Touch {
            key: key.clone(),
            exptime: ttl as i32,
            noreply: false,
        };
        stored(self.write("touch", &key, cmd).await)
    }

    async fn arith(&self, key: impl AsRef<[u8]>, delta: u64, incr: bool) -> Result<u64, Error> {
        let key = checked_key(key)?;
        let cmd = Command::Arith {
            key: key.clone(),
            delta,
            incr,
            noreply: false,
        };
        let op = if incr { "incr" } else { "decr" };
        match self.write(op, &key, cmd).await? {
            Response::Number(n) => Ok(n),
            Response::NotFound => Err(Error::NotFound),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Adds `delta` to the decimal number at `key` (wrapping at 2^64).
    pub async fn incr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<u64, Error> {
        self.arith(key, delta, true).await
    }

    /// Subtracts `delta` from the decimal number at `key` (stopping at 0).
    pub async fn decr(&self, key: impl AsRef<[u8]>, delta: u64) -> Result<u64, Error> {
        self.arith(key, delta, false).await
    }
}
