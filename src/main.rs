//! bulkhead: the command-line entry point.
#![forbid(unsafe_code)]

mod bench;
mod config;
mod shell;
mod switch;
mod visibility;

// Temporary dispatch (foundation bring-up) until the clap CLI lands:
//   bulkhead run --config FILE [--stats-period N]
//   bulkhead config default
//   bulkhead bench fwd [--mode io] [--flows N[,N...]] [--seconds S] [--rounds R]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let opt = |name: &str| a.iter().position(|x| *x == name).and_then(|i| a.get(i + 1)).copied();
    let res: Result<(), String> = match a.as_slice() {
        ["config", "default", ..] => {
            print!("{}", config::default_toml());
            Ok(())
        }
        ["run", ..] => match opt("--config") {
            Some(c) => {
                let period = opt("--stats-period").and_then(|s| s.parse().ok()).unwrap_or(0);
                switch::run(std::path::Path::new(c), period).map_err(|e| e.to_string())
            }
            None => Err("run: --config FILE is required".into()),
        },
        ["bench", "fwd", ..] => {
            let mut o = bench::FwdBenchOpts::default();
            if let Some(m) = opt("--mode") {
                o.mode = m.to_string();
            }
            if let Some(f) = opt("--flows") {
                o.flows = f.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            }
            if let Some(s) = opt("--seconds").and_then(|s| s.parse().ok()) {
                o.seconds = s;
            }
            if let Some(r) = opt("--rounds").and_then(|s| s.parse().ok()) {
                o.rounds = r;
            }
            bench::fwd(&o).map(|_| ()).map_err(|e| e.to_string())
        }
        _ => Err("usage: bulkhead run --config FILE [--stats-period N] | config default | bench fwd [...]".into()),
    };
    if let Err(e) = res {
        eprintln!("bulkhead: error: {e}");
        std::process::exit(1);
    }
}
