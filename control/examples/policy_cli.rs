//! The control commands without the DPDK binary, for trying policies quickly:
//!
//! ```text
//! cargo run -p control --example policy_cli -- check   MODEL FILE...
//! cargo run -p control --example policy_cli -- explain MODEL FROM TO PORT FILE...
//! cargo run -p control --example policy_cli -- reach   MODEL TO_SELECTOR FILE...
//! cargo run -p control --example policy_cli -- conformance CASE...
//! ```

use control::commands::{conformance, policy_check, policy_explain, reach};
use control::{CheckArgs, ConformanceArgs, ExplainArgs, ReachArgs};
use std::path::PathBuf;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let p = |v: &[String]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
    let mut out = std::io::stdout();
    let r = match a.first().map(String::as_str) {
        Some("check") if a.len() >= 3 => policy_check(
            &CheckArgs {
                model: Some(a[1].clone().into()),
                files: p(&a[2..]),
            },
            &mut out,
        ),
        Some("explain") if a.len() >= 6 => policy_explain(
            &ExplainArgs {
                model: a[1].clone().into(),
                from: a[2].clone(),
                to: a[3].clone(),
                port: a[4].clone(),
                policies: p(&a[5..]),
            },
            &mut out,
        ),
        Some("reach") if a.len() >= 4 => reach(
            &ReachArgs {
                model: a[1].clone().into(),
                to: Some(a[2].clone()),
                policies: p(&a[3..]),
                ..Default::default()
            },
            &mut out,
        ),
        Some("conformance") => conformance(
            &ConformanceArgs {
                model: None,
                cases: p(&a[1..]),
            },
            &mut out,
        ),
        _ => {
            eprintln!("usage: see the doc comment of control/examples/policy_cli.rs");
            std::process::exit(2);
        }
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
