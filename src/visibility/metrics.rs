//! Prometheus metrics: the text exposition format, served over HTTP on
//! 127.0.0.1 by default (never on a routable address unless configured).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Builds one exposition page.
#[derive(Debug, Default)]
pub struct Page {
    out: String,
    last: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Page {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample; the `# HELP`/`# TYPE` lines are written once per metric name.
    pub fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        if self.last != name {
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
            self.last = name.to_string();
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, "counter", help, labels, value as f64);
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "gauge", help, labels, value);
    }

    /// The page text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Renders the current page.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `addr` from a background thread. Returns the bound address.
pub fn serve(addr: SocketAddr, render: Render) -> io::Result<SocketAddr> {
    let l = TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("metrics on {addr}: {e}")))?;
    let bound = l.local_addr()?;
    std::thread::Builder::new().name("bh-metrics".into()).spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(match conn.try_clone() {
                Ok(c) => c,
                Err(_) => continue,
            });
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            // skip headers
            let mut h = String::new();
            while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            let mut w = conn;
            let (status, body) = if first.starts_with("GET /metrics") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "see /metrics\n".to_string())
            };
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    #[test]
    fn scrape_returns_the_rendered_page() {
        let render: Render = Arc::new(|| {
            let mut p = Page::new();
            p.counter("bulkhead_port_rx_packets_total", "Packets received.", &[("port", "0")], 5);
            p.counter("bulkhead_port_rx_packets_total", "Packets received.", &[("port", "1")], 7);
            p.counter("bulkhead_drop_total", "Drops.", &[("reason", "policy \"deny\"")], 2);
            p.finish()
        });
        let a = serve("127.0.0.1:0".parse().unwrap(), render).unwrap();
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert_eq!(body.matches("# TYPE bulkhead_port_rx_packets_total counter").count(), 1);
        assert!(body.contains("bulkhead_port_rx_packets_total{port=\"1\"} 7\n"), "{body}");
        assert!(body.contains("reason=\"policy \\\"deny\\\"\""), "{body}");
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    }
}
