//! Executes shell lines against the switch in this process: the server side
//! of the control socket, and the target of `bulkhead cli` when it runs the
//! switch itself. Output follows testpmd's shapes.

use super::command::{self, Command, PortSel};
use super::socket::Target;
use crate::switch::Switch;
use std::fmt::Write as _;

/// The switch as a shell target.
#[derive(Debug)]
pub struct SwitchTarget<'a>(pub &'a mut Switch);

fn sel(p: PortSel) -> Option<u16> {
    match p {
        PortSel::All => None,
        PortSel::One(n) => Some(n),
    }
}

impl SwitchTarget<'_> {
    fn ports(&self, p: PortSel) -> Vec<u16> {
        match p {
            PortSel::All => self.0.port_ids(),
            PortSel::One(n) => vec![n],
        }
    }

    fn run(&mut self, cmd: Command) -> Result<String, crate::switch::Error> {
        let sw = &mut *self.0;
        let mut out = String::new();
        match cmd {
            Command::ShowPortInfo(p) => {
                for id in self.ports(p) {
                    let _ = write!(out, "{}", self.0.port_info(id)?);
                }
            }
            Command::ShowPortStats(p) => {
                for id in self.ports(p) {
                    let _ = write!(out, "{}", self.0.port_stats(id)?);
                }
            }
            Command::ShowPortXstats(p) => {
                for id in self.ports(p) {
                    let _ = writeln!(out, "###### NIC extended statistics for port {id:<2} ######");
                    for (k, v) in self.0.port_xstats(id)? {
                        let _ = writeln!(out, "{k}: {v}");
                    }
                    let _ = writeln!(out, "#########################################################");
                }
            }
            Command::ClearPortStats(p) => {
                sw.clear_port_stats(sel(p))?;
                for id in self.ports(p) {
                    let _ = writeln!(out, "\n  NIC statistics for port {id} cleared");
                }
            }
            Command::ShowFwdStats => {
                let _ = write!(out, "{}", sw.fwd_stats());
            }
            Command::ClearFwdStats => {
                sw.clear_fwd_stats();
                out.push_str("Forwarding statistics cleared\n");
            }
            Command::SetFwd(m) => {
                sw.set_fwd(&m)?;
                let _ = writeln!(out, "Set {m} packet forwarding mode");
            }
            Command::Start => {
                sw.start()?;
                out = sw.show_config(command::ConfigWhat::Fwd);
            }
            Command::Stop => {
                let r = sw.stop()?;
                let _ = write!(out, "Telling cores to stop...\nWaiting for lcores to finish...\n{r}\nDone.\n");
            }
            Command::PortStart(p) => sw.port_start(sel(p))?,
            Command::PortStop(p) => sw.port_stop(sel(p))?,
            Command::PortClose(p) => sw.port_close(sel(p))?,
            Command::PortConfig(q, n) => sw.port_config(q, n)?,
            Command::SetBurst(n) => {
                sw.set_burst(n)?;
                let _ = writeln!(out, "Number of packets per burst set to {n}");
            }
            Command::SetNbcore(n) => {
                sw.set_nbcore(n)?;
                let _ = writeln!(out, "Number of forwarding cores set to {n}");
            }
            Command::ShowConfig(w) => out = sw.show_config(w),
            Command::Help => out = command::help_text(),
            Command::Quit => out = "Bye...\n".into(),
        }
        Ok(out)
    }
}

impl Target for SwitchTarget<'_> {
    fn execute(&mut self, line: &str) -> Result<String, String> {
        match command::parse(line) {
            Ok(None) => Ok(String::new()),
            Ok(Some(c)) => self.run(c).map_err(|e| e.to_string()),
            Err(e) => Err(e.msg),
        }
    }
}
