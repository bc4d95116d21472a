//! The embedded datastore: the whole state in one JSON file on this host.
//! Every write replaces the file atomically (write a temporary file beside
//! it, fsync, rename over, fsync the directory), so a crash leaves the old
//! state or the new one, never a torn file; a restart reloads it.

use super::{ClusterState, Datastore};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, FIRST_DYNAMIC};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The state file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { file: path.to_path_buf(), cause: e }
}

impl FileStore {
    /// The store at `path` (the file need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state (empty when the file does not exist).
    ///
    /// # Errors
    /// An unreadable or malformed file (named).
    pub fn load(&self) -> Result<ClusterState> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| Error::Datastore(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterState::default()),
            Err(e) => Err(io(&self.path, e)),
        }
    }

    /// Replaces the file with `st`, atomically.
    ///
    /// # Errors
    /// Write, fsync or rename failures.
    pub fn save(&self, st: &ClusterState) -> Result<()> {
        let text = serde_json::to_string_pretty(st).map_err(|e| Error::Datastore(e.to_string()))?;
        write_atomic(&self.path, &text)
    }

    /// Where the switch of `host` acknowledges this file: `<file>.ack-<host>`
    /// beside it. Not in the file itself, which is the operator's: a write
    /// of the switch's own would look to it like a change to follow.
    pub fn ack_path(&self, host: &str) -> PathBuf {
        let (dir, name) = dir_name(&self.path);
        dir.join(format!("{name}.ack-{}", host.replace('/', "_")))
    }

    /// Writes `host`'s acknowledgement, atomically.
    ///
    /// # Errors
    /// Write, fsync or rename failures.
    pub fn write_ack(&self, host: &str, ack: &FileAck) -> Result<()> {
        let text = serde_json::to_string(ack).map_err(|e| Error::Datastore(e.to_string()))?;
        write_atomic(&self.ack_path(host), &text)
    }

    /// Every acknowledgement written beside the file, by host, live or not
    /// ([`FileAck::live`]); a malformed one is an error naming its file.
    ///
    /// # Errors
    /// An unreadable directory.
    pub fn acks(&self) -> Result<BTreeMap<String, Result<FileAck>>> {
        let (dir, name) = dir_name(&self.path);
        let prefix = format!("{name}.ack-");
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(dir, e)),
        };
        for e in entries {
            let e = e.map_err(|e| io(dir, e))?;
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(host) = f.strip_prefix(&prefix) else { continue };
            let p = e.path();
            let ack = std::fs::read_to_string(&p)
                .map_err(|x| io(&p, x))
                .and_then(|t| serde_json::from_str(&t).map_err(|x| Error::Datastore(format!("{}: {x}", p.display()))));
            out.insert(host.to_string(), ack);
        }
        Ok(out)
    }

    fn update(&mut self, f: impl FnOnce(&mut ClusterState) -> Result<()>) -> Result<i64> {
        let mut st = self.load()?;
        f(&mut st)?;
        st.revision += 1;
        self.save(&st)?;
        Ok(st.revision)
    }
}

/// The directory `path` is in (`.` for a bare name) and its file name.
fn dir_name(path: &Path) -> (&Path, String) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    (dir, path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into()))
}

/// Replaces `path` with `text`: a temporary file beside it, fsync, rename
/// over, fsync the directory (a crash leaves the old file or the new one).
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let (dir, name) = dir_name(path);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What a switch following a state file enforces ([`FileStore::write_ack`]),
/// the embedded store's counterpart of an etcd host's [`super::HostAck`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAck {
    /// The data revision it enforces.
    pub revision: i64,
    /// Workloads in the state it enforces.
    pub workloads: usize,
    /// When it started enforcing it (Unix ms).
    pub at_ms: u64,
    /// The switch's process: the acknowledgement is live while it runs.
    pub pid: u32,
    /// Why the file's newest state was refused ("" when it is enforced).
    pub error: String,
}

impl FileAck {
    /// True while the process that wrote it runs (the state file is local,
    /// so its switch runs on this machine).
    pub fn live(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Datastore for FileStore {
    fn snapshot(&mut self) -> Result<ClusterState> {
        self.load()
    }

    fn put(&mut self, rel: &str, value: &str) -> Result<i64> {
        self.update(|st| {
            st.set(rel, Some(value.to_string()));
            Ok(())
        })
    }

    fn delete(&mut self, rel: &str) -> Result<i64> {
        self.update(|st| {
            st.set(rel, None);
            Ok(())
        })
    }

    fn allocate_identity(&mut self, key: &IdentityKey) -> Result<u32> {
        let k = format!("{}{}", super::keys::ID_KEY, super::identity_key_text(key));
        let st = self.load()?;
        if let Some(v) = st.kvs.get(&k) {
            return v.parse().map_err(|_| Error::Datastore(format!("key {k}: `{v}` is not a number")));
        }
        let next: u32 = match st.kvs.get(super::keys::ID_NEXT) {
            Some(v) => v.parse().map_err(|_| Error::Datastore(format!("key {}: `{v}` is not a number", super::keys::ID_NEXT)))?,
            None => FIRST_DYNAMIC,
        };
        let after = next.checked_add(1).ok_or(Error::IdentitiesExhausted)?;
        let text = super::identity_key_text(key);
        self.update(|st| {
            st.set(&k, Some(next.to_string()));
            st.set(&format!("{}{next}", super::keys::ID_NUM), Some(text));
            st.set(super::keys::ID_NEXT, Some(after.to_string()));
            Ok(())
        })?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::WorkloadRecord;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bh-filestore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_survives_a_restart_and_leaves_no_temporary_file() {
        let d = dir("restart");
        let p = d.join("state.json");
        let mut s = FileStore::new(&p);
        s.put_namespace("shop", &Default::default()).unwrap();
        let r = WorkloadRecord { labels: [("app".into(), "web".into())].into(), addresses: vec!["10.0.0.1".parse().unwrap()], host: "h1".into(), mac: None };
        s.put_workload("shop/web", &r).unwrap();
        s.put_policy("p.toml", "[settings]\ndefault_deny = true\n").unwrap();
        let before = s.snapshot().unwrap();
        // A new store on the same file (a restarted host) sees the same state.
        let mut again = FileStore::new(&p);
        let after = again.snapshot().unwrap();
        assert_eq!(before, after);
        assert!(after.revision >= 4, "namespace, identity, workload, policy: {}", after.revision);
        let want = after.desired("h1", &Default::default()).unwrap();
        assert_eq!(want.model.workloads["shop/web"].addresses, r.addresses);
        assert!(want.policies.settings.default_deny_ingress);
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")], "only the state file is left");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn same_label_set_same_number_and_distinct_sets_distinct_numbers() {
        let d = dir("ids");
        let mut s = FileStore::new(d.join("s.json"));
        let k = |v: &str| IdentityKey { namespace: "a".into(), labels: [("app".to_string(), v.to_string())].into() };
        let a = s.allocate_identity(&k("x")).unwrap();
        let b = s.allocate_identity(&k("y")).unwrap();
        assert_eq!(s.allocate_identity(&k("x")).unwrap(), a);
        assert_ne!(a, b);
        assert_eq!(a, FIRST_DYNAMIC);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_malformed_policy_is_refused_before_writing_and_bad_data_names_its_key() {
        let d = dir("bad");
        let mut s = FileStore::new(d.join("s.json"));
        let e = s.put_policy("p.toml", "[[policy]]\nname = \n").unwrap_err();
        assert!(e.to_string().contains("p.toml"), "{e}");
        assert!(s.snapshot().unwrap().kvs.is_empty(), "nothing written");
        // Data written behind the validator's back is rejected when read.
        s.put("pol/q.toml", "[[policy]]\nnamee = 1\n").unwrap();
        let e = s.snapshot().unwrap().desired("h", &Default::default()).unwrap_err();
        assert!(e.to_string().contains("pol/q.toml"), "{e}");
        s.delete("pol/q.toml").unwrap();
        s.put("wl/x/y", "{not json").unwrap();
        let e = s.snapshot().unwrap().desired("h", &Default::default()).unwrap_err();
        assert!(e.to_string().contains("wl/x/y"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
