//! ClassBench rule sets and traces (Taylor & Turner), and the logic of
//! `bulkhead classify`. Formats: ../shared/data/classbench/README.md; IPv6
//! prefixes in rules (`@2001:db8::/32 ...`) and IPv6 text addresses in traces
//! are read too, for IPv6 sets in the same layout.
//!
//! Rule line `i` (0-based, blank lines skipped) becomes `RuleId(i)` with
//! priority `n - 1 - i`, so line 0 wins over every later line. ClassBench's
//! TCP-flags column is parsed and ignored: the classifier has no flags field
//! (as in DPDK's rte_acl 5-tuple layout and dpdk-test-acl).

use core::net::Ipv6Addr;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::classify::{Classifier, BURST};
use crate::key::{is_v4, v4_mapped, FlowKey};
use crate::rule::{Action, Match, PortRange, Prefix, Rule, RuleId};

/// What went wrong reading a ClassBench file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or the output written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Result of this module.
pub type Result<T> = core::result::Result<T, Error>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), cause: source })
}

/// A decimal number: digits only (no sign, no spaces), in range for `T`.
fn dec<T: core::str::FromStr>(s: &str) -> Option<T> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn parse_v4(s: &str) -> Option<u32> {
    let mut a = 0u32;
    let mut n = 0;
    for part in s.split('.') {
        a = a << 8 | u32::from(dec::<u8>(part)?);
        n += 1;
    }
    (n == 4).then_some(a)
}

/// `a.b.c.d/LEN`, or an IPv6 prefix (`2001:db8::/32`). `::/0`
/// is [`Prefix::ANY`]: it matches addresses of both families.
fn parse_prefix(s: &str) -> core::result::Result<Prefix, String> {
    let (a, l) = s.split_once('/').ok_or_else(|| format!("address `{s}` has no /LEN"))?;
    if a.contains(':') {
        let a: Ipv6Addr = a.parse().map_err(|_| format!("bad IPv6 address `{a}`"))?;
        let l: u8 = dec(l).filter(|&l| l <= 128).ok_or_else(|| format!("bad prefix length `{l}`"))?;
        return Ok(Prefix::new(u128::from(a), l));
    }
    let a = parse_v4(a).ok_or_else(|| format!("bad IPv4 address `{a}`"))?;
    let l: u8 = dec(l).filter(|&l| l <= 32).ok_or_else(|| format!("bad prefix length `{l}`"))?;
    Ok(Prefix::v4(a, l))
}

fn parse_hex(s: &str) -> Option<u32> {
    let s = s.trim();
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u32::from_str_radix(h, 16).ok()
}

/// `LO : HI` at the start of `s` (spaces around the colon optional), and
/// what follows it.
fn port_range<'a>(s: &'a str, what: &str) -> core::result::Result<(PortRange, &'a str), String> {
    let s = s.trim_start();
    let (lo, rest) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let rest = rest.trim_start();
    let shown = || s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let Some(rest) = rest.strip_prefix(':') else {
        return Err(format!("{what} port range `{}` is not LO : HI", shown()));
    };
    let rest = rest.trim_start();
    let (hi, rest) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()));
    let (Some(lo), Some(hi)) = (dec::<u16>(lo), dec::<u16>(hi)) else {
        return Err(format!("{what} port range `{}`: ports are 0-65535", shown()));
    };
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("{what} port range `{}` is not LO : HI", shown()));
    }
    if lo > hi {
        return Err(format!("empty {what} port range {lo} : {hi}"));
    }
    Ok((PortRange { lo, hi }, rest))
}

fn parse_rule_line(line: &str) -> core::result::Result<Match, String> {
    let body = line.strip_prefix('@').ok_or("a rule line starts with `@`")?;
    // SRC DST SPORT_LO : SPORT_HI DPORT_LO : DPORT_HI PROTO/MASK [FLAGS/MASK],
    // tabs or spaces between fields, `lo:hi` or `lo : hi`.
    let expected = "expected SRC DST SPORT_LO:HI DPORT_LO:HI PROTO/MASK [FLAGS/MASK]";
    let body = body.trim_start();
    let (src, body) = body.split_at(body.find(char::is_whitespace).ok_or(expected)?);
    let body = body.trim_start();
    let (dst, body) = body.split_at(body.find(char::is_whitespace).ok_or(expected)?);
    let src = parse_prefix(src)?;
    let dst = parse_prefix(dst)?;
    let (sport, body) = port_range(body, "source")?;
    let (dport, body) = port_range(body, "destination")?;
    let t: Vec<&str> = body.split_whitespace().collect();
    let Some(p) = t.first() else { return Err(format!("{expected}: no protocol")) };
    let (pv, pm) = p.split_once('/').ok_or_else(|| format!("protocol `{p}` is not VALUE/MASK"))?;
    let (pv, pm) = match (parse_hex(pv), parse_hex(pm)) {
        (Some(v), Some(m)) if v <= 0xff && m <= 0xff => (v as u8, m as u8),
        _ => return Err(format!("bad protocol `{p}`")),
    };
    let proto = match pm {
        0x00 => None,
        0xff => Some(pv),
        _ => return Err(format!("protocol mask {pm:#04x} unsupported (0x00 any or 0xFF exact)")),
    };
    if let Some(f) = t.get(1) {
        let ok = f.split_once('/').is_some_and(|(v, m)| parse_hex(v).is_some() && parse_hex(m).is_some());
        if !ok {
            return Err(format!("bad flags `{f}`"));
        }
    }
    if t.len() > 2 {
        return Err(format!("{} fields, at most 8 expected", t.len() + 6));
    }
    Ok(Match { src, dst, sport, dport, proto, ..Match::ANY })
}

/// Parses a rule set from text (`name` is used in errors).
///
/// # Errors
/// [`Error::Parse`] naming the first malformed line.
pub fn parse_rules_str(text: &str, name: &Path) -> Result<Vec<Rule>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut ms = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let m = parse_rule_line(line).map_err(|msg| Error::Parse { path: name.into(), line: i + 1, msg })?;
        ms.push(m);
    }
    let n = ms.len() as u32;
    Ok(ms
        .into_iter()
        .enumerate()
        .map(|(i, m)| Rule {
            id: RuleId(i as u32),
            priority: n - 1 - i as u32,
            m,
            action: Action::Allow,
            cookie: i as u64,
        })
        .collect())
}

/// Reads a ClassBench rule file: rule `i` is the `i`-th non-blank line.
///
/// # Errors
/// I/O errors and malformed lines ([`Error::Parse`] names file and line).
pub fn parse_rules(path: &Path) -> Result<Vec<Rule>> {
    parse_rules_str(&read(path)?, path)
}

/// Parses a trace from text: `SRC DST SPORT DPORT PROTO [FLAGS [RULE]]`,
/// addresses as decimal u32 (IPv4) or IPv6 text. Extra columns are ignored
/// (never trusted).
///
/// # Errors
/// [`Error::Parse`] naming the first malformed line.
pub fn parse_trace_str(text: &str, name: &Path) -> Result<Vec<FlowKey>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.is_empty() {
            continue;
        }
        let err = |msg: String| Error::Parse { path: name.into(), line: i + 1, msg };
        if t.len() < 5 {
            return Err(err(format!("expected SRC DST SPORT DPORT PROTO, got {} fields", t.len())));
        }
        let a = |j: usize| {
            let v4 = dec::<u32>(t[j]).map(v4_mapped);
            v4.or_else(|| t[j].parse::<Ipv6Addr>().ok().map(u128::from)).ok_or_else(|| err(format!("bad address `{}`", t[j])))
        };
        let p = |j: usize| dec::<u16>(t[j]).ok_or_else(|| err(format!("bad port `{}`", t[j])));
        let (src, dst, sport, dport) = (a(0)?, a(1)?, p(2)?, p(3)?);
        let proto = dec::<u8>(t[4]).ok_or_else(|| err(format!("bad protocol `{}`", t[4])))?;
        keys.push(FlowKey::new(0, src, dst, proto, sport, dport));
    }
    Ok(keys)
}

/// Reads a ClassBench trace file.
///
/// # Errors
/// I/O errors and malformed lines.
pub fn parse_trace(path: &Path) -> Result<Vec<FlowKey>> {
    parse_trace_str(&read(path)?, path)
}

/// Builds a classifier holding `rules` (ids must be distinct).
pub fn build(rules: &[Rule]) -> Classifier {
    let mut c = Classifier::new();
    for r in rules {
        c.insert(*r).expect("ClassBench rule ids are distinct");
    }
    c.compile();
    c.shrink_to_fit();
    c
}

/// The bursts of a trace: full bursts of 32 and a masked tail (lane mask).
pub fn bursts(keys: &[FlowKey]) -> Vec<([FlowKey; BURST], u32)> {
    keys.chunks(BURST)
        .map(|c| {
            let mut b = [FlowKey::default(); BURST];
            b[..c.len()].copy_from_slice(c);
            let live = if c.len() == BURST { u32::MAX } else { (1u32 << c.len()) - 1 };
            (b, live)
        })
        .collect()
}

/// `bulkhead classify`: for each trace line, prints the 0-based index of the
/// highest-priority matching rule, or -1.
///
/// # Errors
/// I/O and parse errors.
pub fn classify(rules: &Path, trace: &Path, out: &mut dyn Write) -> Result<()> {
    let cls = build(&parse_rules(rules)?);
    let keys = parse_trace(trace)?;
    let mut s = String::with_capacity(keys.len() * 6);
    let mut res = [None; BURST];
    for (b, live) in bursts(&keys) {
        cls.lookup_batch(&b, live, &mut res);
        for r in res.iter().take(live.count_ones() as usize) {
            match r {
                Some(r) => {
                    use fmt::Write as _;
                    let _ = writeln!(s, "{}", r.id.0);
                }
                None => s.push_str("-1\n"),
            }
        }
    }
    out.write_all(s.as_bytes()).map_err(|source| Error::Io { path: "<output>".into(), cause: source })
}

/// Settings of [`bench`].
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Minimum lookup time; whole passes over the trace are timed.
    pub lookup_secs: f64,
    /// Delete + re-insert pairs (each pair is two updates).
    pub update_pairs: usize,
    /// Seed of the update sequence.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { lookup_secs: 1.0, update_pairs: 200_000, seed: 0x5eed }
    }
}

/// What [`bench`] measured. `Display` is the one-line `classify --bench` output.
#[derive(Clone, Copy, Debug)]
pub struct BenchReport {
    /// Rules in the set.
    pub rules: usize,
    /// Subtables after loading.
    pub subtables: usize,
    /// Lookups, million per second (burst 32, one core): the best window of
    /// [`PASSES_PER_WINDOW`] passes over the trace.
    pub lookup_mpps: f64,
    /// Lookups, million per second, over the whole lookup phase.
    pub lookup_mpps_mean: f64,
    /// Inserts + deletes per second.
    pub update_per_s: f64,
    /// 99th percentile latency of one insert or delete, microseconds.
    pub update_p99_us: f64,
    /// [`Classifier::bytes`] per rule.
    pub bytes_per_rule: f64,
    /// [`Classifier::index_bytes`] per rule (without the rule records).
    pub index_bytes_per_rule: f64,
    /// Rules served by the compiled core after loading, and its trees.
    pub compiled: usize,
    /// Trees of the compiled core.
    pub trees: usize,
    /// Inserts + deletes per second of *changed* rules (each re-insert under
    /// another id, so it goes to the delta instead of reviving the core's
    /// tombstone): the update path while no compile has caught up.
    pub delta_update_per_s: f64,
    /// 99th percentile latency of one such insert or delete, microseconds.
    pub delta_update_p99_us: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "classify rules={} lookup_mpps={:.2} update_per_s={:.0} update_p99_us={:.2} bytes_per_rule={:.0}",
            self.rules, self.lookup_mpps, self.update_per_s, self.update_p99_us, self.bytes_per_rule
        )
    }
}

/// A small deterministic generator (xorshift64*), for benches and synthetic traces.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (0 is mapped to a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// `classify --bench`: lookup rate over the trace in bursts of 32, then
/// random delete + re-insert of existing rules (the set stays full).
///
/// # Errors
/// I/O and parse errors.
pub fn bench(rules: &Path, trace: &Path, opts: &BenchOptions) -> Result<BenchReport> {
    let rules = parse_rules(rules)?;
    let keys = parse_trace(trace)?;
    Ok(bench_sets(&rules, &keys, opts))
}

/// [`bench`] on parsed inputs.
pub fn bench_sets(rules: &[Rule], keys: &[FlowKey], opts: &BenchOptions) -> BenchReport {
    let mut cls = build(rules);
    let stats = cls.stats();
    let bytes = cls.bytes() as f64;
    let index_bytes = cls.index_bytes() as f64;

    let (best_mpps, mean_mpps, _, _) = bench_lookup_windows(&cls, keys, opts.lookup_secs);

    // Updates: first the throughput with no per-op timers, then latencies.
    let n = rules.len() as u64;
    let (mut update_per_s, mut p99) = (0.0, 0.0);
    if n > 0 && opts.update_pairs > 0 {
        let mut rng = Rng::new(opts.seed);
        let t0 = Instant::now();
        for _ in 0..opts.update_pairs {
            let r = rules[rng.below(n) as usize];
            cls.remove(r.id).expect("present");
            cls.insert(r).expect("absent");
        }
        update_per_s = (2 * opts.update_pairs) as f64 / t0.elapsed().as_secs_f64();
        let lat = timed_pairs(&mut cls, opts.update_pairs, || {
            let r = rules[rng.below(n) as usize];
            (r.id, r)
        });
        p99 = p99_us(lat);
    }
    // Changed rules: each delete + insert moves one rule to another id (top
    // bit flipped), so the insert lands in the delta, and so does a later
    // delete of a moved rule. Timed per op; the delta grows as it would
    // with no compile.
    let (mut delta_update_per_s, mut delta_p99) = (0.0, 0.0);
    if n > 0 && opts.update_pairs > 0 {
        let mut rng = Rng::new(opts.seed ^ 0xde17a);
        let mut id: Vec<u32> = rules.iter().map(|r| r.id.0).collect();
        let t0 = Instant::now();
        let lat = timed_pairs(&mut cls, opts.update_pairs, || {
            let i = rng.below(n) as usize;
            let old = RuleId(id[i]);
            id[i] ^= 1 << 31;
            (old, Rule { id: RuleId(id[i]), ..rules[i] })
        });
        delta_update_per_s = (2 * opts.update_pairs) as f64 / t0.elapsed().as_secs_f64();
        delta_p99 = p99_us(lat);
    }
    BenchReport {
        compiled: stats.compiled,
        trees: stats.core.trees,
        delta_update_per_s,
        delta_update_p99_us: delta_p99,
        rules: rules.len(),
        subtables: stats.subtables,
        lookup_mpps: best_mpps,
        lookup_mpps_mean: mean_mpps,
        update_per_s,
        update_p99_us: p99,
        bytes_per_rule: bytes / rules.len().max(1) as f64,
        index_bytes_per_rule: index_bytes / rules.len().max(1) as f64,
    }
}

/// `pairs` times: deletes the id `next` names and inserts the rule it gives,
/// each timed; the latencies in ns.
fn timed_pairs(cls: &mut Classifier, pairs: usize, mut next: impl FnMut() -> (RuleId, Rule)) -> Vec<u64> {
    let mut lat = Vec::with_capacity(2 * pairs);
    for _ in 0..pairs {
        let (old, r) = next();
        let t = Instant::now();
        cls.remove(old).expect("present");
        let t1 = Instant::now();
        cls.insert(r).expect("absent");
        let t2 = Instant::now();
        lat.push((t1 - t).as_nanos() as u64);
        lat.push((t2 - t1).as_nanos() as u64);
    }
    lat
}

/// The 99th percentile of latencies in ns, in microseconds (non-empty).
fn p99_us(mut lat: Vec<u64>) -> f64 {
    lat.sort_unstable();
    lat[lat.len() * 99 / 100] as f64 / 1000.0
}

/// Passes over the trace per timed window in [`bench_lookup`]: the ITERS of
/// peers/rte-acl-bench.sh, so both report over windows of the same length.
pub const PASSES_PER_WINDOW: usize = 20;

/// Lookup rates: whole passes over `keys` in bursts of 32, in windows of
/// [`PASSES_PER_WINDOW`] passes, for at least `secs` (after one untimed
/// warm-up pass). Returns (best window Mpps, mean Mpps over all windows,
/// packets, seconds). On a shared machine the best window is the one least
/// disturbed by other processes, as rte-acl-bench's best repetition is.
pub fn bench_lookup_windows(cls: &Classifier, keys: &[FlowKey], secs: f64) -> (f64, f64, u64, f64) {
    let bs = bursts(keys);
    let mut out = [None; BURST];
    let mut sink = 0u64;
    let mut pkts = 0u64;
    let mut best = 0f64;
    for (b, live) in &bs {
        sink = sink.wrapping_add(cls.lookup_batch(b, *live, &mut out) as u64);
    }
    let t0 = Instant::now();
    loop {
        let w0 = Instant::now();
        for _ in 0..PASSES_PER_WINDOW {
            for (b, live) in &bs {
                let miss = cls.lookup_batch(core::hint::black_box(b), *live, &mut out);
                sink = sink.wrapping_add(miss as u64 ^ out[0].map_or(0, |r| r.id.0 as u64));
            }
        }
        let n = (PASSES_PER_WINDOW * keys.len()) as u64;
        pkts += n;
        best = best.max(n as f64 / w0.elapsed().as_secs_f64().max(1e-9) / 1e6);
        if t0.elapsed().as_secs_f64() >= secs || keys.is_empty() {
            break;
        }
    }
    core::hint::black_box(sink);
    let s = t0.elapsed().as_secs_f64();
    (best, pkts as f64 / s.max(1e-9) / 1e6, pkts, s)
}

/// Whole passes over `keys` in bursts of 32 for at least `secs` (after one
/// untimed warm-up pass): (packets looked up, seconds).
pub fn bench_lookup(cls: &Classifier, keys: &[FlowKey], secs: f64) -> (u64, f64) {
    let bs = bursts(keys);
    let mut out = [None; BURST];
    let mut sink = 0u64;
    let mut pkts = 0u64;
    for (b, live) in &bs {
        sink = sink.wrapping_add(cls.lookup_batch(b, *live, &mut out) as u64);
    }
    let t0 = Instant::now();
    loop {
        for (b, live) in &bs {
            let miss = cls.lookup_batch(core::hint::black_box(b), *live, &mut out);
            sink = sink.wrapping_add(miss as u64 ^ out[0].map_or(0, |r| r.id.0 as u64));
        }
        pkts += keys.len() as u64;
        if t0.elapsed().as_secs_f64() >= secs || keys.is_empty() {
            break;
        }
    }
    core::hint::black_box(sink);
    (pkts, t0.elapsed().as_secs_f64())
}

/// A synthetic trace for a rule set that has none: `per_rule` headers drawn
/// uniformly from inside each rule, rules in random order (like the `.gen`
/// traces of the data README).
pub fn synth_trace(rules: &[Rule], per_rule: usize, seed: u64) -> Vec<FlowKey> {
    let mut rng = Rng::new(seed);
    let mut keys = Vec::with_capacity(rules.len() * per_rule);
    for _ in 0..rules.len() * per_rule {
        let r = &rules[rng.below(rules.len() as u64) as usize];
        // Every host bit drawn (a second word only for prefixes shorter
        // than /64, so IPv4 sets draw the same sequence as before).
        let mut pick_addr = |p: Prefix| {
            let lo = u128::from(rng.next_u64());
            let hi = if p.len < 64 { u128::from(rng.next_u64()) << 64 } else { 0 };
            p.addr | ((hi | lo) & !p.mask())
        };
        let (src, dst) = (pick_addr(r.m.src), pick_addr(r.m.dst));
        let mut pick_port = |p: PortRange| (p.lo as u64 + rng.below(p.hi as u64 - p.lo as u64 + 1)) as u16;
        let (sport, dport) = (pick_port(r.m.sport), pick_port(r.m.dport));
        let proto = r.m.proto.unwrap_or(rng.below(256) as u8);
        keys.push(FlowKey::new(0, src, dst, proto, sport, dport));
    }
    keys
}

/// Writes keys in ClassBench trace format (`SRC DST SPORT DPORT PROTO 0 -1`).
///
/// # Errors
/// I/O errors.
pub fn write_trace(keys: &[FlowKey], out: &mut dyn Write) -> std::io::Result<()> {
    let mut s = String::with_capacity(keys.len() * 40);
    for k in keys {
        use fmt::Write as _;
        let a = |a: u128| if is_v4(a) { (a as u32).to_string() } else { Ipv6Addr::from(a).to_string() };
        let _ = writeln!(s, "{}\t{}\t{}\t{}\t{}\t0\t-1", a(k.src), a(k.dst), k.sport, k.dport, k.proto);
    }
    out.write_all(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_whitespace_variants_and_any_proto() {
        let text = "@1.2.3.0/24\t10.0.0.0/8\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\n  @0.0.0.0/0 0.0.0.0/0 1024:2048 0 : 65535 0x00/0x00\n";
        let rs = parse_rules_str(text, Path::new("t")).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].m.src, Prefix::v4(0x0102_0300, 24));
        assert_eq!(rs[0].m.dport, PortRange::exact(80));
        assert_eq!(rs[0].m.proto, Some(6));
        assert!(rs[0].priority > rs[1].priority);
        assert_eq!(rs[1].m.proto, None);
        assert_eq!(rs[1].m.sport, PortRange { lo: 1024, hi: 2048 });
        assert_eq!(rs[1].m.src, Prefix::v4(0, 0));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse_rules_str("@1.2.3.4/32 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF\n@1.2.3/8 x\n", Path::new("f.rules"))
            .unwrap_err();
        assert!(e.to_string().starts_with("f.rules:2: "), "{e}");
        let e = parse_rules_str("@1.2.3.4/33 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF\n", Path::new("r")).unwrap_err();
        assert!(e.to_string().contains("r:1: bad prefix length"), "{e}");
        let e = parse_rules_str("@1.2.3.4/3 1.2.3.4/32 0 : 1 0 : 1 0x06/0x0F\n", Path::new("r")).unwrap_err();
        assert!(e.to_string().contains("unsupported"), "{e}");
        let e = parse_trace_str("1 2 3 4 6 0 1\n\n1 2 3\n", Path::new("t")).unwrap_err();
        assert!(e.to_string().starts_with("t:3: "), "{e}");
    }

    #[test]
    fn port_ranges_need_their_colon_and_numbers_their_digits() {
        // Every spacing of the colon reads alike; a BOM before the first line is skipped.
        for r in ["0:65535", "0 :65535", "0: 65535", "0\t:\t65535"] {
            let rs = parse_rules_str(&format!("\u{feff}@1.2.3.4/32 0.0.0.0/0 {r} 80:80 0x06/0xFF\n"), Path::new("r")).unwrap();
            assert_eq!((rs[0].m.sport, rs[0].m.dport), (PortRange::ANY, PortRange::exact(80)), "{r}");
        }
        let bad = |line: &str, want: &str| {
            let e = parse_rules_str(line, Path::new("r")).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        };
        bad("@1.2.3.4/32 0.0.0.0/0 0 65535 80 : 80 0x06/0xFF", "source port range `0 65535 80` is not LO : HI");
        bad("@1.2.3.4/32 0.0.0.0/0 0 : 65535 : 7 80 : 80 0x06/0xFF", "destination port range");
        bad("@1.2.3.4/32 0.0.0.0/0 0 : 65536 80 : 80 0x06/0xFF", "ports are 0-65535");
        bad("@1.2.3.4/32 0.0.0.0/0 0 : 5x 80 : 80 0x06/0xFF", "is not LO : HI");
        bad("@+1.2.3.4/32 0.0.0.0/0 0 : 1 80 : 80 0x06/0xFF", "bad IPv4 address");
        bad("@1.2.3.4/+8 0.0.0.0/0 0 : 1 80 : 80 0x06/0xFF", "bad prefix length");
        bad("@1.2.3.4/32 0.0.0.0/0 +0 : 1 80 : 80 0x06/0xFF", "source port range");
        bad("@1.2.3.4/32 0.0.0.0/0 0 : 1 80 : 80", "no protocol");
        let e = parse_trace_str("+1 2 3 4 6\n", Path::new("t")).unwrap_err().to_string();
        assert!(e.contains("bad address `+1`"), "{e}");
        let e = parse_trace_str("\u{feff}1 2 3 +4 6\n", Path::new("t")).unwrap_err().to_string();
        assert!(e.contains("t:1: bad port `+4`"), "{e}");
    }

    #[test]
    fn trace_and_classify_output() {
        let keys = parse_trace_str("16909060 167772161 5 80 6 0 0\n  \n1 2 3 4 17\n", Path::new("t")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].src, v4_mapped(0x0102_0304));
        assert_eq!((keys[0].dport, keys[1].proto), (80, 17));
        let dir = std::env::temp_dir().join(format!("ft-cb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (rp, tp) = (dir.join("r"), dir.join("t"));
        std::fs::write(&rp, "@1.2.3.0/24\t10.0.0.0/8\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\n@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\t0x0000/0x0000\n").unwrap();
        std::fs::write(&tp, "16909060 167772161 5 80 6 0 0\n16909060 167772161 5 81 6 0 1\n1 2 3 4 17 0 -1\n").unwrap();
        let mut out = Vec::new();
        classify(&rp, &tp, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "0\n1\n-1\n");
        let rep = bench(&rp, &tp, &BenchOptions { lookup_secs: 0.0, update_pairs: 10, seed: 1 }).unwrap();
        assert_eq!(rep.rules, 2);
        assert!(rep.to_string().starts_with("classify rules=2 lookup_mpps="));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ipv6_rules_and_traces() {
        // IPv6 sets in the same layout: colons inside the addresses, ports
        // as in the IPv4 format.
        let text = "@2001:db8::/32\t::/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\n\
                    @2001:db8:1::/48 2001:db8:2::1/128 1024:2048 0:65535 0x11/0xFF\n\
                    @10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n";
        let rs = parse_rules_str(text, Path::new("r6")).unwrap();
        assert_eq!(rs[0].m.src, Prefix::new(0x2001_0db8 << 96, 32));
        assert_eq!(rs[0].m.dst, Prefix::ANY);
        assert_eq!((rs[0].m.dport, rs[0].m.proto), (PortRange::exact(80), Some(6)));
        assert_eq!(rs[1].m.dst, Prefix::new(0x2001_0db8_0002 << 80 | 1, 128));
        assert_eq!((rs[1].m.sport, rs[1].m.proto), (PortRange { lo: 1024, hi: 2048 }, Some(17)));
        assert_eq!(rs[2].m.src, Prefix::v4(0x0a00_0000, 8));
        for bad in ["@2001:db8::/129 ::/0 0 : 1 0 : 1 0x06/0xFF", "@2001:zz::/32 ::/0 0 : 1 0 : 1 0x06/0xFF"] {
            let e = parse_rules_str(bad, Path::new("r6")).unwrap_err();
            assert!(e.to_string().starts_with("r6:1: bad "), "{e}");
        }
        // Traces: decimal IPv4 or IPv6 text, mixed; written back the same way.
        let trace = "2001:db8::5\t2001:db8:2::1\t1500\t80\t6\t0\t0\n                     2001:db8:1::9 2001:db8:2::1 1500 53 17 0 1\n                     167772161 2001:db8::1 1 2 6 0 2\n                     167772161 3232235777 1 2 6\n";
        let keys = parse_trace_str(trace, Path::new("t6")).unwrap();
        let mut out = Vec::new();
        write_trace(&keys, &mut out).unwrap();
        assert_eq!(parse_trace_str(core::str::from_utf8(&out).unwrap(), Path::new("w")).unwrap(), keys);
        assert!(parse_trace_str("2001:db8::zz 1 2 3 6\n", Path::new("t6")).is_err());
        // The classifier (IPv6 rules in its delta) against a plain first match.
        let cls = build(&rs);
        let first = |k: &FlowKey| rs.iter().position(|r| r.m.matches(k));
        let want = [Some(0), Some(1), None, Some(2)];
        for (k, want) in keys.iter().zip(want) {
            assert_eq!(first(k), want, "{k:?}");
            assert_eq!(cls.lookup(k).map(|r| r.id.0 as usize), want, "{k:?}");
        }
        // Synthetic headers of IPv6 rules fall inside them.
        for k in synth_trace(&rs, 20, 5) {
            assert!(rs.iter().any(|r| r.m.matches(&k)), "{k:?}");
        }
    }

    #[test]
    fn synthetic_headers_match_their_rule() {
        let rs =
            parse_rules_str("@1.2.3.0/24\t10.0.0.0/8\t0 : 65535\t80 : 90\t0x06/0xFF\t0x0000/0x0000\n", Path::new("r"))
                .unwrap();
        for k in synth_trace(&rs, 50, 3) {
            assert!(rs[0].m.matches(&k));
        }
    }
}
