//! bulkhead: the command-line entry point. Parses arguments (see `cli.rs`) and
//! dispatches to the crates; every error ends as one line on stderr and a
//! non-zero exit.
#![forbid(unsafe_code)]

mod bench;
mod bench_vhost;
mod cli;
mod cluster_cmd;
mod config;
mod dataplane;
mod shell;
mod switch;
mod visibility;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{BenchCmd, Cli, ClusterCmd, Cmd, ConfigCmd, PolicyCmd};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Large tables (cache, connections, compiled classifier) on transparent
/// huge pages: see `pmd::thp`. `BULKHEAD_THP=0` keeps them on base pages.
#[global_allocator]
static ALLOC: pmd::thp::ThpAlloc = pmd::thp::ThpAlloc;

fn main() -> ExitCode {
    pmd::thp::advise_from_env();
    let args = Cli::parse();
    match dispatch(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("bulkhead: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn exit_code(c: i32) -> u8 {
    c.clamp(0, 255) as u8
}

fn dispatch(args: Cli) -> Result<u8> {
    let cmd = match (args.cmd, args.interactive) {
        (Some(c), _) => c,
        (None, true) => Cmd::Cli(cli::CliArgs {
            socket: shell::DEFAULT_SOCKET.into(),
            cmdline_file: None,
            config: None,
        }),
        (None, false) => {
            <Cli as clap::CommandFactory>::command().print_help()?;
            return Ok(2);
        }
    };
    let out = &mut std::io::stdout();
    match cmd {
        Cmd::Run(a) => {
            run_switch(&a.config, a.stats_period, &a.socket)?;
            Ok(0)
        }
        Cmd::Cli(a) => run_cli(&a),
        Cmd::Config(ConfigCmd::Default) => {
            print!("{}", config::default_toml());
            Ok(0)
        }
        Cmd::Bench(BenchCmd::Fwd(a)) => {
            let mut o =
                bench::FwdBenchOpts { mode: a.mode, flows: a.flows, rules: a.rules, stateful: a.stateful, ..Default::default() };
            if let Some(s) = a.seconds {
                o.seconds = s;
            }
            if let Some(w) = a.warmup {
                o.warmup = w;
            }
            if let Some(r) = a.rounds {
                o.rounds = r;
            }
            bench::fwd(&o)?;
            Ok(0)
        }
        Cmd::Bench(BenchCmd::Vhost(a)) => {
            let mut o = bench_vhost::VhostBenchOpts { systems: a.systems, topology: a.topology, seconds: a.seconds, rounds: a.rounds, warmup: a.warmup, workdir: a.workdir, ..Default::default() };
            if let Some(s) = a.ovs_script {
                o.ovs_script = s;
            }
            bench_vhost::vhost(&o)?;
            Ok(0)
        }
        Cmd::Bench(BenchCmd::PolicyUpdate(a)) => {
            let r = dataplane::latency::update_latency(&a.config, &a.workload, a.iterations, std::time::Duration::from_secs(a.warmup))?;
            print!("{r}");
            Ok(0)
        }
        Cmd::Bench(BenchCmd::Offload(a)) => {
            let o = dataplane::offload_bench::OffloadBenchOpts {
                flows: a.flows,
                hot: a.hot,
                hot_share: a.hot_share,
                deny_pct: a.deny_pct,
                seconds: a.seconds,
                rounds: a.rounds,
                threshold: a.threshold,
                lcores: a.lcores,
                ..Default::default()
            };
            print!("{}", dataplane::offload_bench::run(&o)?);
            Ok(0)
        }
        Cmd::Classify(a) => {
            if a.bench {
                let r = flowtable::classbench::bench(&a.rules, &a.trace, &Default::default())?;
                println!("{r}");
                eprintln!(
                    "compiled={} trees={} delta: update_per_s={:.0} update_p99_us={:.2}",
                    r.compiled, r.trees, r.delta_update_per_s, r.delta_update_p99_us
                );
            } else {
                let mut w = std::io::BufWriter::new(out.lock());
                flowtable::classbench::classify(&a.rules, &a.trace, &mut w)?;
                w.flush()?;
            }
            Ok(0)
        }
        Cmd::Policy(PolicyCmd::Check { model, files }) => {
            Ok(exit_code(control::commands::policy_check(&control::CheckArgs { model, files }, out)?))
        }
        Cmd::Policy(PolicyCmd::Explain { model, from, to, port, files }) => {
            let a = control::ExplainArgs { model, policies: files, from, to, port };
            Ok(exit_code(control::commands::policy_explain(&a, out)?))
        }
        Cmd::Policy(PolicyCmd::Apply { store, wait, timeout, files }) => cluster_cmd::apply(&store, &files, wait.then(|| std::time::Duration::from_secs_f64(timeout.max(0.0)))),
        Cmd::Cluster(ClusterCmd::Status { store }) => cluster_cmd::status(&store),
        Cmd::Reach(a) => {
            let r = control::ReachArgs { model: a.model, policies: a.files, from: a.from, to: a.to, port: a.port, json: a.json };
            Ok(exit_code(control::commands::reach(&r, out)?))
        }
        Cmd::Conformance(a) => {
            let c = control::ConformanceArgs { model: a.model, cases: a.cases };
            if a.dataplane {
                return Ok(exit_code(dataplane::conformance::run(&c, out)?));
            }
            Ok(exit_code(control::commands::conformance(&c, out)?))
        }
        Cmd::GenTraffic(a) => {
            match &a.model {
                Some(m) => {
                    let model = control::Model::load(m)?;
                    let frames = model_traffic(&model, a.flows.clamp(1, 64) as u16);
                    pmd::pcap::write(&a.out, &frames).with_context(|| format!("{}", a.out.display()))?;
                    println!("wrote {} frames between {} workloads to {}", frames.len(), model.workloads.len(), a.out.display());
                }
                None => {
                    pmd::pcap::write_bench_flows(&a.out, a.flows).with_context(|| format!("{}", a.out.display()))?;
                    println!("wrote {} flows to {}", a.flows, a.out.display());
                }
            }
            Ok(0)
        }
        Cmd::Flows(a) => {
            if !a.follow {
                bail!("flows: only --follow is supported (records also go to the JSON-lines and IPFIX sinks)");
            }
            visibility::export::follow(&a.socket, out)?;
            Ok(0)
        }
    }
}

/// Frames between every ordered pair of workloads (first addresses) on common
/// service ports, `per` source ports each: the demo's mix of allowed app
/// flows and denied lateral movement.
fn model_traffic(model: &control::Model, per: u16) -> Vec<Vec<u8>> {
    use flowtable::key::addr_of;
    use flowtable::parse::build::{Spec, L4};
    const SERVICES: [(u16, bool); 7] = [(80, true), (443, true), (8080, true), (8443, true), (5432, true), (9100, true), (53, false)];
    let ws: Vec<&control::Workload> = model.workloads.values().filter(|w| !w.addresses.is_empty()).collect();
    let mut frames = Vec::new();
    for s in &ws {
        for d in &ws {
            if s.key() == d.key() {
                continue;
            }
            let (src, dst) = (addr_of(s.addresses[0]), addr_of(d.addresses[0]));
            if flowtable::key::is_v4(src) != flowtable::key::is_v4(dst) {
                continue;
            }
            for (port, tcp) in SERVICES {
                for i in 0..per {
                    let sport = 32768 + i;
                    let l4 = if tcp { L4::Tcp { sport, dport: port, flags: 0x02 } } else { L4::Udp { sport, dport: port } };
                    frames.push(Spec::new(src, dst, l4).build());
                }
            }
        }
    }
    frames
}

/// Runs the switch with its control socket served from the control thread.
fn run_switch(config: &Path, stats_period: u64, sock: &Path) -> Result<()> {
    let listen = config::Config::load(config).map(|c| c.metrics.listen).unwrap_or_default();
    let page = std::sync::Arc::new(std::sync::RwLock::new(String::new()));
    let mut server: Option<shell::ControlServer> = None;
    let mut tried = false;
    switch::run_with(config, stats_period, |sw| {
        if !tried {
            // Bound once the switch is up, so a failed start leaves no socket behind.
            tried = true;
            match shell::ControlServer::bind(sock) {
                Ok(s) => server = Some(s),
                Err(e) => eprintln!("bulkhead: control socket {}: {e} (running without it)", sock.display()),
            }
            if let Ok(addr) = listen.parse() {
                let pg = page.clone();
                let render: visibility::metrics::Render = std::sync::Arc::new(move || pg.read().map(|p| p.clone()).unwrap_or_default());
                match visibility::metrics::serve(addr, render) {
                    Ok(a) => eprintln!("bulkhead: metrics on http://{a}/metrics"),
                    Err(e) => eprintln!("bulkhead: {e} (running without metrics)"),
                }
            }
        }
        if let Some(s) = server.as_mut() {
            s.poll(&mut shell::SwitchTarget(sw));
        }
        if let Ok(mut p) = page.write() {
            *p = sw.metrics_page();
        }
        true
    })
    .with_context(|| format!("switch ({})", config.display()))?;
    Ok(())
}

/// `bulkhead cli`: attach to a running switch, or run one here.
fn run_cli(a: &cli::CliArgs) -> Result<u8> {
    if let Ok(mut c) = shell::Client::connect(&a.socket) {
        let mut failed = 0;
        if let Some(f) = &a.cmdline_file {
            match shell::repl::run_file(&mut c, f, &mut std::io::stdout())? {
                None => return Ok(0),
                Some(n) => failed += n,
            }
        }
        failed += shell::repl::interactive(&mut c);
        return Ok(if failed > 0 { 1 } else { 0 });
    }
    let Some(cfg) = &a.config else {
        bail!(
            "no switch is listening on {} and no --config was given to start one",
            a.socket.display()
        );
    };
    run_switch_interactive(cfg, a.cmdline_file.as_deref())
}

/// The switch in this process, driven by the shell on the terminal (testpmd -i).
fn run_switch_interactive(cfg: &Path, script: Option<&Path>) -> Result<u8> {
    let conf = config::Config::load(cfg).with_context(|| format!("{}", cfg.display()))?;
    pmd::signal::install();
    let mut sw = switch::Switch::new(&conf)?;
    let mut failed = 0;
    let mut quit = false;
    if let Some(f) = script {
        match shell::repl::run_file(&mut shell::SwitchTarget(&mut sw), f, &mut std::io::stdout()) {
            Ok(None) => quit = true,
            Ok(Some(n)) => failed += n,
            Err(e) => {
                let _ = sw.shutdown();
                return Err(e.into());
            }
        }
    }
    if !quit {
        failed += shell::repl::interactive(&mut shell::SwitchTarget(&mut sw));
    }
    if sw.is_forwarding() {
        if let Ok(r) = sw.stop() {
            println!("{r}");
        }
    }
    sw.shutdown()?;
    Ok(if failed > 0 { 1 } else { 0 })
}
