//! memcached's password files: `user:password` lines, for the text
//! protocol's authentication (`-Y <file>`: a client authenticates by
//! sending, before anything else, a `set` whose data block is `<user>
//! <password>`; the key, flags and exptime are ignored) and for SASL PLAIN
//! over the binary protocol (`-S`, the file memcached's `MEMCACHED_SASL_PWDB`
//! names). Re-read on SIGHUP; a broken file on reload leaves the running
//! entries in place, as memcached does.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// One `user:password` line.
type Entry = (Vec<u8>, Vec<u8>);

/// The credentials a node accepts.
pub struct AuthFile {
    path: PathBuf,
    entries: RwLock<Vec<Entry>>,
}

/// memcached reads at most this much of a line.
const MAX_LINE: usize = 256;

fn parse(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read(path).map_err(|e| format!("auth file {}: {e}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let line = &line[..line.len().min(MAX_LINE)];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "auth file {} line {}: malformed, should be 'user:password'",
                path.display(),
                n + 1
            ));
        };
        entries.push((line[..colon].to_vec(), line[colon + 1..].to_vec()));
    }
    if entries.is_empty() {
        return Err(format!(
            "auth file {}: no 'user:password' line (nobody could connect)",
            path.display()
        ));
    }
    Ok(entries)
}

/// Equal, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthFile {
    /// Reads `path`; a node does not start with a file it cannot use.
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        Ok(AuthFile {
            path: path.to_path_buf(),
            entries: RwLock::new(parse(path)?),
        })
    }

    /// Re-reads the file; on error the running entries stay.
    pub fn reload(&self) -> Result<(), String> {
        let entries = parse(&self.path)?;
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = entries;
        Ok(())
    }

    /// The file's path (for `stats settings`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the data block of an authenticating `set` (`<user>
    /// <password>`, space-separated) names an entry. `None` when it is not
    /// two tokens (memcached's "bad authentication token format").
    pub fn check(&self, data: &[u8]) -> Option<bool> {
        let mut tokens = data.split(|&b| b == b' ').filter(|t| !t.is_empty());
        let (user, pass) = (tokens.next()?, tokens.next()?);
        Some(self.verify(user, pass))
    }

    /// Whether `user` with `password` is an entry (SASL PLAIN's check).
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        // Every entry is compared, so the time says nothing of which matched.
        entries
            .iter()
            .fold(false, |ok, (u, p)| ok | (same(u, user) & same(p, password)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memcacheds_format_and_checks_tokens() {
        let dir = std::env::temp_dir().join(format!("zc-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth");
        std::fs::write(&path, "alice:s3cret\r\nbob:pass:with:colons\n").unwrap();
        let auth = AuthFile::load(&path).unwrap();
        assert_eq!(auth.check(b"alice s3cret"), Some(true));
        assert_eq!(auth.check(b"bob pass:with:colons"), Some(true));
        assert_eq!(auth.check(b"alice wrong"), Some(false));
        assert_eq!(auth.check(b"alice"), None);
        std::fs::write(&path, "no colon here\n").unwrap();
        assert!(auth.reload().unwrap_err().contains("malformed"));
        assert_eq!(auth.check(b"alice s3cret"), Some(true), "old entries stay");
        std::fs::write(&path, "carol:x\n").unwrap();
        auth.reload().unwrap();
        assert_eq!(auth.check(b"alice s3cret"), Some(false));
        assert_eq!(auth.check(b"carol x"), Some(true));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
