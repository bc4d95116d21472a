//! VM ports (vhost-user, `net_vhost`): their state for `show port info` and
//! `show vhost`, and link changes turned into dataplane updates.
//!
//! The control thread polls each VM port's link about every 100 ms
//! ([`Switch::poll_links`]); a change is printed and, when the policy plane
//! exists, published as one generation: down marks the port down (traffic to
//! its workloads is dropped and counted as `link_down`, connections decided
//! before are re-decided), up clears it (traffic resumes at the next burst).

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use pmd::vhost::{self, LinkEvents, VhostArgs, VhostConn, VhostMode};
use pmd::{Port, PortConf};

use super::Switch;

/// The queue settings of a port: VM ports take their queue pairs from the
/// devargs (`queues=N`, the device's limit), every other port `base`.
pub(super) fn port_conf(base: PortConf, devargs: &str) -> PortConf {
    match VhostArgs::parse(devargs) {
        Ok(Some(v)) => PortConf { rxq: v.queues, txq: v.queues, ..base },
        _ => base,
    }
}

/// One VM port, as the shell shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostReport {
    /// Port id.
    pub port: u16,
    /// Device name (`net_vhost0`).
    pub name: String,
    /// Socket path.
    pub socket: PathBuf,
    /// Who owns the socket.
    pub mode: VhostMode,
    /// Queue pairs configured.
    pub queues: u16,
    /// Link up (a frontend is connected and its rings are ready).
    pub link_up: bool,
    /// The vhost library's view of the frontend.
    pub conn: VhostConn,
    /// Link and queue events so far.
    pub events: LinkEvents,
    /// Workloads bound to the port (`ns/name`).
    pub workloads: Vec<String>,
}

impl VhostReport {
    fn state(&self) -> &'static str {
        match (self.conn.vid.is_some(), self.link_up, self.mode) {
            (true, true, _) => "connected",
            (true, false, _) => "negotiating",
            (false, _, VhostMode::Server) => "listening",
            (false, _, VhostMode::Client) => "reconnecting",
        }
    }

    /// The `show port info` lines.
    pub fn info_lines(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "vhost-user socket: {} ({} mode)", self.socket.display(), self.mode);
        let _ = writeln!(s, "vhost-user queues: {}", self.queues);
        match self.conn.vid {
            Some(vid) => {
                let _ = writeln!(s, "vhost-user connection: {} (vid {vid}, {} vrings)", self.state(), self.conn.vrings);
            }
            None => {
                let _ = writeln!(s, "vhost-user connection: {} (no frontend)", self.state());
            }
        }
        let _ = writeln!(
            s,
            "vhost-user negotiated features: {:#x} ({})",
            self.conn.features,
            if self.conn.features == 0 { "none".to_string() } else { vhost::feature_names(self.conn.features).join(" ") }
        );
        let _ = writeln!(
            s,
            "vhost-user link events: {} up, {} down, {} queue-state",
            self.events.ups, self.events.downs, self.events.queue_state
        );
        let _ = write!(s, "vhost-user workloads: {}", if self.workloads.is_empty() { "none".to_string() } else { self.workloads.join(" ") });
        s
    }
}

/// `show vhost`: every VM port, one line each, then the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostList {
    /// VM ports.
    pub ports: Vec<VhostReport>,
    /// mbufs in use and pool size.
    pub mbufs: (u32, u32),
}

impl fmt::Display for VhostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ports.is_empty() {
            return writeln!(f, "no vhost-user ports");
        }
        writeln!(f, "{:<4} {:<12} {:<6} {:<6} {:<12} {:<4} {:<18} {:>3} {:>5}  socket / workloads", "port", "device", "mode", "queues", "state", "vid", "features", "ups", "downs")?;
        for r in &self.ports {
            writeln!(
                f,
                "{:<4} {:<12} {:<6} {:<6} {:<12} {:<4} {:<18} {:>3} {:>5}  {} {}",
                r.port,
                r.name,
                r.mode.to_string(),
                r.queues,
                r.state(),
                r.conn.vid.map_or_else(|| "-".to_string(), |v| v.to_string()),
                format!("{:#x}", r.conn.features),
                r.events.ups,
                r.events.downs,
                r.socket.display(),
                if r.workloads.is_empty() { "-".to_string() } else { r.workloads.join(",") }
            )?;
        }
        writeln!(f, "mbufs in use: {} of {}", self.mbufs.0, self.mbufs.1)
    }
}

impl Switch {
    fn vhost_report(&self, p: &Port) -> Option<VhostReport> {
        let args = VhostArgs::parse(p.devargs()).ok().flatten()?;
        let id = p.id();
        let workloads = self
            .policy
            .plane
            .as_ref()
            .map(|pl| pl.compiler().model().workloads.values().filter(|w| w.port == Some(id)).map(|w| w.key()).collect())
            .unwrap_or_default();
        Some(VhostReport {
            port: id,
            name: p.name().to_string(),
            socket: args.iface,
            mode: args.mode,
            queues: p.conf().rxq,
            link_up: p.link().up,
            conn: vhost::connection(id),
            events: vhost::events(id),
            workloads,
        })
    }

    /// The vhost-user state of `port` (None: not a VM port).
    pub fn vhost_info(&self, port: u16) -> Option<VhostReport> {
        self.ports.iter().find(|p| p.id() == port).and_then(|p| self.vhost_report(p))
    }

    /// The id of the port whose device is `name` (`net_vhost0`; `vhost0` is
    /// accepted for `net_vhost0`).
    pub fn port_id_by_name(&self, name: &str) -> Option<u16> {
        self.ports.iter().find(|p| p.name() == name || p.name().strip_prefix("net_") == Some(name)).map(Port::id)
    }

    /// `show vhost`.
    pub fn vhost_list(&self) -> VhostList {
        let ports = self.ports.iter().filter(|p| p.state() != pmd::PortState::Closed).filter_map(|p| self.vhost_report(p)).collect();
        VhostList { ports, mbufs: (self.pool.in_use(), self.pool.in_use() + self.pool.avail()) }
    }

    /// Checks every VM port's link; a change is printed and published to the
    /// policy plane (see the module docs). Returns the changes (port, up).
    pub fn poll_links(&mut self) -> Vec<(u16, bool)> {
        let mut changed = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.state() != pmd::PortState::Started || !vhost::is_vhost(p.devargs()) {
                continue;
            }
            let up = p.link().up;
            if self.links.get(i).copied().flatten() != Some(up) {
                if let Some(l) = self.links.get_mut(i) {
                    *l = Some(up);
                }
                changed.push((p.id(), up));
            }
        }
        for &(port, up) in &changed {
            let name = self.ports.iter().find(|p| p.id() == port).map(|p| p.name().to_string()).unwrap_or_default();
            match self.policy.plane.as_mut() {
                Some(pl) if pl.port_link_down(port) == up => {
                    let pb = pl.set_port_link(port, up);
                    println!("port {port} ({name}): vhost-user link {}, published generation {}", if up { "up" } else { "down" }, pb.gen);
                }
                _ => println!("port {port} ({name}): vhost-user link {}", if up { "up" } else { "down" }),
            }
        }
        changed
    }
}
