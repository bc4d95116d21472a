//! The control socket: how `bulkhead cli` (and scripts) drive a running switch.
//!
//! Protocol, one request at a time per connection:
//! - request: one command line, UTF-8, ending in `\n`;
//! - response: a header line `OK <len>` or `ERR <len>`, then exactly `<len>`
//!   bytes of text (the command's output or the error message).
//!
//! The socket is created mode 0600 in a directory of mode 0700 (root only by
//! default). Connections are served by small threads that hand each line to the
//! switch's control loop through a channel; the control loop answers between
//! its other duties ([`ControlServer::poll`]), so commands never race the
//! switch's own state changes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/bulkhead/bulkhead.sock";

/// Something that executes shell lines: the switch in this process, or a remote one.
pub trait Target {
    /// Executes one command line; Ok is the output, Err the error message.
    fn execute(&mut self, line: &str) -> Result<String, String>;
}

struct Request {
    line: String,
    reply: mpsc::Sender<Result<String, String>>,
}

/// The listening side, owned by the switch's control loop.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    rx: mpsc::Receiver<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("line", &self.line).finish()
    }
}

impl ControlServer {
    /// Binds `path` (creating its directory, mode 0700). A stale socket left by a
    /// dead process is replaced; a live one is an error.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another bulkhead is already serving {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new().name("bh-ctl-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let _ = thread::Builder::new().name("bh-ctl-conn".into()).spawn(move || serve_conn(conn, tx));
            }
        })?;
        Ok(Self { path: path.to_path_buf(), rx })
    }

    /// Answers every request waiting now; never blocks. Returns how many.
    pub fn poll(&mut self, target: &mut dyn Target) -> usize {
        let mut n = 0;
        while let Ok(req) = self.rx.try_recv() {
            let _ = req.reply.send(target.execute(&req.line));
            n += 1;
        }
        n
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_conn(conn: UnixStream, tx: mpsc::Sender<Request>) {
    let Ok(mut w) = conn.try_clone() else { return };
    let r = BufReader::new(conn);
    for line in r.lines() {
        let Ok(line) = line else { return };
        let (rtx, rrx) = mpsc::channel();
        if tx.send(Request { line, reply: rtx }).is_err() {
            return;
        }
        let Ok(res) = rrx.recv() else { return };
        let (tag, body) = match &res {
            Ok(s) => ("OK", s.as_str()),
            Err(s) => ("ERR", s.as_str()),
        };
        if write!(w, "{tag} {}\n{body}", body.len()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

/// The client side: a connection to a running switch.
#[derive(Debug)]
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let s = UnixStream::connect(path)?;
        Ok(Self { w: s.try_clone()?, r: BufReader::new(s) })
    }
}

impl Target for Client {
    fn execute(&mut self, line: &str) -> Result<String, String> {
        let io = |e: std::io::Error| format!("control socket: {e}");
        writeln!(self.w, "{}", line.trim()).map_err(io)?;
        let mut head = String::new();
        self.r.read_line(&mut head).map_err(io)?;
        let (tag, len) = head
            .trim_end()
            .split_once(' ')
            .ok_or_else(|| format!("control socket: bad response header {head:?}"))?;
        let len: usize = len.parse().map_err(|_| format!("control socket: bad length in {head:?}"))?;
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).map_err(io)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        match tag {
            "OK" => Ok(body),
            "ERR" => Err(body),
            _ => Err(format!("control socket: bad response tag {tag:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<String>);
    impl Target for Echo {
        fn execute(&mut self, line: &str) -> Result<String, String> {
            self.0.push(line.to_string());
            if line == "bad" { Err("no such thing".into()) } else { Ok(format!("did {line}\nline two\n")) }
        }
    }

    #[test]
    fn round_trip_with_mode_0600_and_stale_socket_replaced() {
        let dir = std::env::temp_dir().join(format!("bh-sock-test-{}", std::process::id()));
        let path = dir.join("s.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(ControlServer::bind(&path).is_err(), "a live socket must not be stolen");
        let h = thread::spawn(move || {
            let mut c = Client::connect(&path).unwrap();
            let a = c.execute("show port stats all");
            let b = c.execute("bad");
            (a, b)
        });
        let mut echo = Echo(vec![]);
        while echo.0.len() < 2 {
            server.poll(&mut echo);
            thread::sleep(std::time::Duration::from_millis(2));
        }
        let (a, b) = h.join().unwrap();
        assert_eq!(a.unwrap(), "did show port stats all\nline two\n");
        assert_eq!(b.unwrap_err(), "no such thing");
        drop(server);
        assert!(!dir.join("s.sock").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
