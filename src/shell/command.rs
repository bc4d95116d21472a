//! The shell's grammar: testpmd's words, one table that drives parsing, `help`
//! and tab completion alike, so the three never disagree.
//!
//! Each entry is a template of space-separated tokens. A token is a literal
//! word, or a placeholder:
//! - `<port>`: a port number or `all`
//! - `<n>`: an unsigned number
//! - `<fwdmode>`: a forwarding engine name
//! - `<word>`: any single token (a name, a path)
//! - `<rest>`: one or more tokens (last in a template only)

use std::fmt;

/// Forwarding engines the shell offers (testpmd's names, plus Bulkhead's `policy`).
pub const FWD_MODES: &[&str] = &["io", "mac", "macswap", "rxonly", "txonly", "flowgen", "policy"];

/// Which ports a command applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSel {
    /// Every port.
    All,
    /// One port.
    One(u16),
}

pub use crate::switch::{QueueParam, ShowConfig as ConfigWhat};

/// A parsed shell command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `show port info <port>`
    ShowPortInfo(PortSel),
    /// `show port stats <port>`
    ShowPortStats(PortSel),
    /// `show port xstats <port>`
    ShowPortXstats(PortSel),
    /// `clear port stats <port>`
    ClearPortStats(PortSel),
    /// `show fwd stats all`
    ShowFwdStats,
    /// `clear fwd stats all`
    ClearFwdStats,
    /// `set fwd <mode>`
    SetFwd(String),
    /// `start`: start forwarding.
    Start,
    /// `stop`: stop forwarding and print the forwarding stats.
    Stop,
    /// `port start <port>`
    PortStart(PortSel),
    /// `port stop <port>`
    PortStop(PortSel),
    /// `port close <port>`
    PortClose(PortSel),
    /// `port config all rxq|txq|rxd|txd <n>`
    PortConfig(QueueParam, u16),
    /// `set burst <n>`
    SetBurst(u16),
    /// `set nbcore <n>`
    SetNbcore(u16),
    /// `show config fwd|rxtx|cores`
    ShowConfig(ConfigWhat),
    /// `policy load FILE`
    PolicyLoad(String),
    /// `policy delete NAME`
    PolicyDelete(String),
    /// `workload add NS/NAME key=value...`
    WorkloadAdd(String, Vec<String>),
    /// `workload move NS/NAME ip=A[,B]`
    WorkloadMove(String, Vec<String>),
    /// `workload del NS/NAME`
    WorkloadDel(String),
    /// `workload label NS/NAME k=v[,k=v]...`
    WorkloadLabel(String, Vec<String>),
    /// `quarantine NS/NAME`
    Quarantine(String),
    /// `unquarantine NS/NAME`
    Unquarantine(String),
    /// `show policy`
    ShowPolicy,
    /// `show pmd stats`
    ShowPmdStats,
    /// `show flows`
    ShowFlows,
    /// `show vhost`
    ShowVhost,
    /// `show cluster`
    ShowCluster,
    /// `flow validate|create|list|query|destroy|flush <port> ...` (testpmd's rte_flow grammar)
    Flow(offload::FlowCommand),
    /// `show offload`
    ShowOffload,
    /// `offload on|off`
    Offload(bool),
    /// `set offload threshold <n>`
    SetOffloadThreshold(u16),
    /// `help`
    Help,
    /// `quit`
    Quit,
}

/// One grammar entry: template and one line of help.
pub struct Entry {
    /// Space-separated tokens (see module docs).
    pub template: &'static str,
    /// Shown by `help`.
    pub help: &'static str,
}

/// The whole grammar, in `help` order.
pub const GRAMMAR: &[Entry] = &[
    Entry { template: "show port info <port>", help: "Show port information: driver, MAC, link, queues." },
    Entry { template: "show port stats <port>", help: "Show port counters and rates since the last show." },
    Entry { template: "show port xstats <port>", help: "Show the driver's extended statistics." },
    Entry { template: "clear port stats <port>", help: "Reset port counters." },
    Entry { template: "show fwd stats all", help: "Show forwarding statistics per stream and in total." },
    Entry { template: "clear fwd stats all", help: "Reset forwarding statistics." },
    Entry { template: "set fwd <fwdmode>", help: "Select the forwarding engine (io mac macswap rxonly txonly flowgen policy)." },
    Entry { template: "start", help: "Start forwarding." },
    Entry { template: "stop", help: "Stop forwarding and show its statistics." },
    Entry { template: "port start <port>", help: "Start port(s)." },
    Entry { template: "port stop <port>", help: "Stop port(s)." },
    Entry { template: "port close <port>", help: "Close port(s): releases the device." },
    Entry { template: "port config all rxq <n>", help: "Rx queues per port (ports must be stopped)." },
    Entry { template: "port config all txq <n>", help: "Tx queues per port (ports must be stopped)." },
    Entry { template: "port config all rxd <n>", help: "Rx descriptors per queue (ports must be stopped)." },
    Entry { template: "port config all txd <n>", help: "Tx descriptors per queue (ports must be stopped)." },
    Entry { template: "set burst <n>", help: "Packets per rx/tx burst (1..=512)." },
    Entry { template: "set nbcore <n>", help: "Number of forwarding cores in use." },
    Entry { template: "show config fwd", help: "Show forwarding mode, streams and cores." },
    Entry { template: "show config rxtx", help: "Show queue, descriptor and burst settings." },
    Entry { template: "show config cores", help: "Show the forwarding cores." },
    Entry { template: "policy load <word>", help: "Add or replace the policies of a file (all or nothing), as a new generation." },
    Entry { template: "policy delete <word>", help: "Remove a policy (namespace/name, or name for cluster-wide ones)." },
    Entry { template: "workload add <word> <rest>", help: "Add ns/name with ip=A[,B] labels=k=v[,k=v] [port=N|DEVICE] [mac=M]." },
    Entry { template: "workload move <word> <rest>", help: "New addresses for a workload: ip=A[,B] (policy follows it)." },
    Entry { template: "workload del <word>", help: "Remove a workload." },
    Entry { template: "workload label <word> <rest>", help: "Replace a workload's labels: k=v[,k=v]." },
    Entry { template: "quarantine <word>", help: "Cut a workload off at once, live connections included." },
    Entry { template: "unquarantine <word>", help: "Lift a quarantine." },
    Entry { template: "show policy", help: "Policies, rule counts, generation, defaults, hits per policy." },
    Entry { template: "show pmd stats", help: "Per-lcore policy engine counters: cache hits, cycles per packet, drops." },
    Entry { template: "show flows", help: "Flow records written and lost, and the most denied flows by workload and rule." },
    Entry { template: "show cluster", help: "Many hosts: datastore, etcd connection, revisions seen and enforced, every live host's acknowledgement." },
    Entry { template: "show vhost", help: "VM (vhost-user) ports: socket, mode, queues, connection, features, link events, workloads." },
    Entry { template: "flow <rest>", help: "testpmd rte_flow: flow validate|create|list|query|destroy|flush <port> ... (model ports: the NIC model)." },
    Entry { template: "show offload", help: "Offload: rules installed, failed, evicted, hardware hits and drops, queue full." },
    Entry { template: "offload on", help: "Put the software NIC model in the rx path of the offload ports (hot flows to hardware)." },
    Entry { template: "offload off", help: "Take the model out of the rx path; every offloaded rule is removed." },
    Entry { template: "set offload threshold <n>", help: "Packets within 1 ms that make a flow hot." },
    Entry { template: "help", help: "This list." },
    Entry { template: "quit", help: "Leave the shell (a switch started by this shell stops)." },
];

/// Why a line did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The message for the user.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ParseError {}

fn token_fits(tmpl: &str, tok: &str) -> bool {
    match tmpl {
        "<port>" => tok == "all" || tok.parse::<u16>().is_ok(),
        "<n>" => tok.parse::<u16>().is_ok(),
        "<fwdmode>" => FWD_MODES.contains(&tok),
        "<word>" | "<rest>" => !tok.is_empty(),
        lit => lit == tok,
    }
}

fn port_sel(tok: &str) -> PortSel {
    if tok == "all" { PortSel::All } else { PortSel::One(tok.parse().unwrap_or(0)) }
}

fn rest(toks: &[&str], from: usize) -> Vec<String> {
    toks[from..].iter().map(|s| s.to_string()).collect()
}

/// Parses one line. Blank lines and `#` comments give `Ok(None)`.
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let line = line.split('#').next().unwrap_or("");
    let toks: Vec<&str> = line.split_whitespace().collect();
    if toks.is_empty() {
        return Ok(None);
    }
    let entry = GRAMMAR.iter().find(|e| {
        let t: Vec<&str> = e.template.split(' ').collect();
        let len_ok = if t.last() == Some(&"<rest>") { toks.len() >= t.len() } else { t.len() == toks.len() };
        len_ok && t.iter().zip(&toks).all(|(a, b)| token_fits(a, b))
    });
    let Some(entry) = entry else {
        return Err(ParseError { msg: no_match_message(&toks) });
    };
    let n = |i: usize| toks[i].parse::<u16>().unwrap_or(0);
    let cmd = match entry.template {
        "show port info <port>" => Command::ShowPortInfo(port_sel(toks[3])),
        "show port stats <port>" => Command::ShowPortStats(port_sel(toks[3])),
        "show port xstats <port>" => Command::ShowPortXstats(port_sel(toks[3])),
        "clear port stats <port>" => Command::ClearPortStats(port_sel(toks[3])),
        "show fwd stats all" => Command::ShowFwdStats,
        "clear fwd stats all" => Command::ClearFwdStats,
        "set fwd <fwdmode>" => Command::SetFwd(toks[2].to_string()),
        "start" => Command::Start,
        "stop" => Command::Stop,
        "port start <port>" => Command::PortStart(port_sel(toks[2])),
        "port stop <port>" => Command::PortStop(port_sel(toks[2])),
        "port close <port>" => Command::PortClose(port_sel(toks[2])),
        "port config all rxq <n>" => Command::PortConfig(QueueParam::Rxq, n(4)),
        "port config all txq <n>" => Command::PortConfig(QueueParam::Txq, n(4)),
        "port config all rxd <n>" => Command::PortConfig(QueueParam::Rxd, n(4)),
        "port config all txd <n>" => Command::PortConfig(QueueParam::Txd, n(4)),
        "set burst <n>" => Command::SetBurst(n(2)),
        "set nbcore <n>" => Command::SetNbcore(n(2)),
        "show config fwd" => Command::ShowConfig(ConfigWhat::Fwd),
        "show config rxtx" => Command::ShowConfig(ConfigWhat::Rxtx),
        "show config cores" => Command::ShowConfig(ConfigWhat::Cores),
        "policy load <word>" => Command::PolicyLoad(toks[2].to_string()),
        "policy delete <word>" => Command::PolicyDelete(toks[2].to_string()),
        "workload add <word> <rest>" => Command::WorkloadAdd(toks[2].to_string(), rest(&toks, 3)),
        "workload move <word> <rest>" => Command::WorkloadMove(toks[2].to_string(), rest(&toks, 3)),
        "workload del <word>" => Command::WorkloadDel(toks[2].to_string()),
        "workload label <word> <rest>" => Command::WorkloadLabel(toks[2].to_string(), rest(&toks, 3)),
        "quarantine <word>" => Command::Quarantine(toks[1].to_string()),
        "unquarantine <word>" => Command::Unquarantine(toks[1].to_string()),
        "show policy" => Command::ShowPolicy,
        "show pmd stats" => Command::ShowPmdStats,
        "show flows" => Command::ShowFlows,
        "show vhost" => Command::ShowVhost,
        "show cluster" => Command::ShowCluster,
        "flow <rest>" => Command::Flow(offload::parse_flow(&toks.join(" ")).map_err(|e| ParseError { msg: e.to_string() })?),
        "show offload" => Command::ShowOffload,
        "offload on" => Command::Offload(true),
        "offload off" => Command::Offload(false),
        "set offload threshold <n>" => Command::SetOffloadThreshold(n(3)),
        "help" => Command::Help,
        "quit" => Command::Quit,
        other => unreachable!("grammar entry without a parser arm: {other}"),
    };
    Ok(Some(cmd))
}

/// The message for a line no template accepts: names the longest accepted
/// prefix and what could follow it.
fn no_match_message(toks: &[&str]) -> String {
    let mut best = 0;
    for e in GRAMMAR {
        let t: Vec<&str> = e.template.split(' ').collect();
        let k = t.iter().zip(toks).take_while(|(a, b)| token_fits(a, b)).count();
        best = best.max(k);
    }
    let next = candidates(&toks[..best], "");
    let typed = toks.join(" ");
    if best == 0 {
        format!("Bad command \"{typed}\": unknown word \"{}\" (try \"help\")", toks[0])
    } else if best < toks.len() {
        format!(
            "Bad arguments in \"{typed}\": after \"{}\" expected one of: {}",
            toks[..best].join(" "),
            next.join(" ")
        )
    } else {
        format!("Incomplete command \"{typed}\": expected one of: {}", next.join(" "))
    }
}

/// Completion candidates for the token being typed (`partial`) after the
/// complete tokens `done`.
pub fn candidates(done: &[&str], partial: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in GRAMMAR {
        let t: Vec<&str> = e.template.split(' ').collect();
        if t.len() <= done.len() || !t.iter().zip(done).all(|(a, b)| token_fits(a, b)) {
            continue;
        }
        let words: Vec<String> = match t[done.len()] {
            "<port>" => vec!["all".into(), "0".into(), "1".into()],
            "<fwdmode>" => FWD_MODES.iter().map(|s| s.to_string()).collect(),
            "<n>" | "<word>" | "<rest>" => vec![],
            lit => vec![lit.to_string()],
        };
        for w in words {
            if w.starts_with(partial) && !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// The `help` text.
pub fn help_text() -> String {
    let w = GRAMMAR.iter().map(|e| e.template.len()).max().unwrap_or(0);
    let mut s = String::from("Commands (testpmd words; <port> is a number or 'all'):\n");
    for e in GRAMMAR {
        s.push_str(&format!("  {:w$}  {}\n", e.template, e.help));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_to_a_command() {
        for e in GRAMMAR {
            let line: Vec<String> = e
                .template
                .split(' ')
                .map(|t| match t {
                    "<port>" => "all".into(),
                    "<n>" => "4".into(),
                    "<fwdmode>" => "mac".into(),
                    // `flow` hands its words to testpmd's grammar.
                    "<rest>" if e.template.starts_with("flow ") => "list 0".into(),
                    "<word>" | "<rest>" => "x".into(),
                    lit => lit.into(),
                })
                .collect();
            let c = parse(&line.join(" ")).unwrap_or_else(|e| panic!("{}: {e}", e.msg));
            assert!(c.is_some(), "{}", e.template);
        }
    }

    #[test]
    fn parses_testpmd_lines() {
        assert_eq!(parse("show port stats 1").unwrap(), Some(Command::ShowPortStats(PortSel::One(1))));
        assert_eq!(parse("  port config all rxq 2 ").unwrap(), Some(Command::PortConfig(QueueParam::Rxq, 2)));
        assert_eq!(parse("set fwd macswap").unwrap(), Some(Command::SetFwd("macswap".into())));
        assert_eq!(parse("# comment").unwrap(), None);
        assert_eq!(parse("flow flush 1").unwrap(), Some(Command::Flow(offload::FlowCommand::Flush(1))));
        assert_eq!(parse("set offload threshold 32").unwrap(), Some(Command::SetOffloadThreshold(32)));
        assert_eq!(parse("offload off").unwrap(), Some(Command::Offload(false)));
        let e = parse("flow create 0 ingress pattern eth / bogus / end actions drop / end").unwrap_err();
        assert!(e.msg.contains("bogus"), "{}", e.msg);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn errors_say_what_was_expected() {
        let e = parse("set fwd warp").unwrap_err();
        assert!(e.msg.contains("expected one of") && e.msg.contains("macswap"), "{}", e.msg);
        let e = parse("frobnicate").unwrap_err();
        assert!(e.msg.contains("unknown word \"frobnicate\""), "{}", e.msg);
        let e = parse("show port").unwrap_err();
        assert!(e.msg.starts_with("Incomplete") && e.msg.contains("stats"), "{}", e.msg);
        assert!(parse("set burst 70000").is_err());
    }

    #[test]
    fn completion_follows_the_grammar() {
        assert_eq!(candidates(&[], "sh"), vec!["show"]);
        let c = candidates(&["show", "port"], "");
        assert_eq!(c, vec!["info", "stats", "xstats"]);
        assert!(candidates(&["set", "fwd"], "mac").contains(&"macswap".to_string()));
        assert!(candidates(&["port", "config", "all"], "r").contains(&"rxd".to_string()));
    }
}
