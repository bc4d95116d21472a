//! Local etcd members for tests and demos: spawns `/usr/bin/etcd` (Debian's
//! etcd-server) on 127.0.0.1 with free ports and a temporary data directory,
//! waits until it answers `/health`, and kills it on drop. One member or a
//! cluster of several; a member can be killed and restarted on the same ports
//! and data.

use crate::error::{Error, Result};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary.
pub const ETCD: &str = "/usr/bin/etcd";

/// True when the etcd binary is installed.
pub fn available() -> bool {
    Path::new(ETCD).exists()
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Datastore(format!("free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Datastore(e.to_string()))?.port())
}

#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A local etcd cluster (one member or more).
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    root: PathBuf,
    token: String,
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl EtcdCluster {
    /// Starts `n` members under a fresh directory `root` (removed on drop).
    ///
    /// # Errors
    /// etcd missing, a member that does not become healthy in 30 s.
    pub fn start(root: &Path, n: usize) -> Result<Self> {
        if !available() {
            return Err(Error::Datastore(format!("{ETCD} is not installed (Debian package etcd-server)")));
        }
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root).map_err(|e| Error::Io { file: root.into(), cause: e })?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member { name: format!("m{i}"), client: free_port()?, peer: free_port()?, dir: root.join(format!("m{i}")), child: None });
        }
        let token = format!("bh-{}-{}", std::process::id(), root.display().to_string().len());
        let mut c = EtcdCluster { members, root: root.to_path_buf(), token };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.wait_healthy(None)?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let cluster: Vec<String> = self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect();
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join(format!("{}.log", m.name))).map_err(|e| Error::Io { file: self.root.clone(), cause: e })?;
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(ETCD)
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new", "--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| Error::Datastore(e.to_string()))?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| Error::Datastore(format!("spawn {ETCD}: {e}")))?;
        m.child = Some(child);
        Ok(())
    }

    /// Waits until every running member (or just `only`) answers `/health`.
    ///
    /// # Errors
    /// Not healthy within 30 s (the member's log is in the error).
    pub fn wait_healthy(&mut self, only: Option<usize>) -> Result<()> {
        let t = Instant::now();
        for (i, m) in self.members.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) || m.child.is_none() {
                continue;
            }
            while !healthy(m.client) {
                if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
                    return Err(Error::Datastore(format!("etcd {} exited ({st}): {}", m.name, std::fs::read_to_string(self.root.join(format!("{}.log", m.name))).unwrap_or_default())));
                }
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(Error::Datastore(format!("etcd {} not healthy after 30 s", m.name)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect()
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` on its ports and data, and waits for it.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(Some(i))
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
