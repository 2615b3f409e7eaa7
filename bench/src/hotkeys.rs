//! `hotkeys`: what the hot-key sketch costs and whether it finds the right
//! keys. One zonecached counts hot keys (`--hot-keys names`, the default),
//! one does not (`--hot-keys off`), stock memcached runs beside them; the
//! same Zipf workload runs against each in turn (A B C A B C …). Then the
//! counting node's `stats hotkeys` top 10 is compared with the workload's
//! true top 10 (under Zipf, key ranks 0–9).

use std::path::Path;

use serde::Serialize;

use crate::load::{LoadSpec, RunResult};
use crate::procs::{Kind, ServerProc};
use crate::report::{self, format_number, median, Table};
use crate::scenarios::{alternate, preload, Measured, ServerSettings};
use crate::workload::{KeyDist, Workload};

/// Settings of `hotkeys`.
#[derive(Debug, Clone, Serialize)]
pub struct HotKeysOptions {
    pub servers: ServerSettings,
    pub workload: Workload,
    pub load: LoadSpec,
    pub pairs: usize,
}

#[derive(Serialize)]
struct HotKeysReport<'a> {
    scenario: &'static str,
    options: &'a HotKeysOptions,
    runs: Vec<Measured>,
    true_top10: Vec<String>,
    found_top10: Vec<String>,
    matched: usize,
    same_order: bool,
}

/// The node's `stats hotkeys` keys, hottest first.
fn hot_keys(server: &ServerProc) -> Vec<String> {
    let text =
        String::from_utf8_lossy(&server.request(b"stats hotkeys\r\n", b"END\r\n")).to_string();
    (1..)
        .map_while(|rank| {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("STAT hotkey:{rank} ")))?;
            Some(line.rsplit_once(' ')?.0.to_string())
        })
        .collect()
}

/// Runs the scenario and prints its table.
pub fn hotkeys(opts: &HotKeysOptions, out_dir: &Path) -> Result<(), String> {
    if !matches!(opts.workload.dist, KeyDist::Zipf(_)) {
        return Err("hotkeys needs a Zipf workload (--dist zipf:<skew>)".into());
    }
    let (memory, threads) = (opts.servers.memory_mb, opts.servers.threads);
    let off = ServerProc::start_with(
        Kind::Zonecached,
        "zonecached --hot-keys off",
        memory,
        threads,
        &["--hot-keys", "off"],
    )?;
    let on = ServerProc::start_with(
        Kind::Zonecached,
        "zonecached (hot keys)",
        memory,
        threads,
        &["--hot-keys", "names"],
    )?;
    let mc = ServerProc::start(Kind::Memcached, memory, threads)?;
    let servers = [&mc, &off, &on];
    for s in servers {
        preload(s.addr, &opts.workload)?;
    }
    eprintln!(
        "hotkeys: {:?}, {} connections, {} s per run, {} rounds",
        opts.workload.dist,
        opts.load.connections,
        opts.load.duration.as_secs_f64(),
        opts.pairs
    );
    let (runs, results) = alternate(&servers, &opts.workload, &opts.load, opts.pairs);
    // Read right after the counting node's last run, within one half-life.
    let found: Vec<String> = hot_keys(&on).into_iter().take(10).collect();
    let truth: Vec<String> = (0..10)
        .map(|i| String::from_utf8_lossy(&opts.workload.key_at(i)).to_string())
        .collect();
    let matched = found.iter().filter(|k| truth.contains(k)).count();
    let same_order = found == truth;

    let med = |rs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| {
        median(&rs.iter().map(f).collect::<Vec<_>>())
    };
    let cpu = |label: &str| crate::scenarios::cpu_per_op(&runs, label);
    let mut table = Table::new(&[
        "figure (median of rounds)",
        "memcached",
        "zonecached --hot-keys off",
        "zonecached (hot keys)",
        "hot keys/off",
    ]);
    let per_server = |f: &dyn Fn(usize) -> f64| [f(0), f(1), f(2)];
    let rows = [
        (
            "ops/s",
            per_server(&|i| med(&results[i], &RunResult::ops_per_sec)),
        ),
        (
            "p99 µs",
            per_server(&|i| med(&results[i], &|r| r.quantile_us(0.99))),
        ),
        (
            "p99.9 µs",
            per_server(&|i| med(&results[i], &|r| r.quantile_us(0.999))),
        ),
        ("server CPU µs/op", per_server(&|i| cpu(servers[i].label))),
    ];
    for (name, [a, b, c]) in rows {
        table.row(vec![
            name.to_string(),
            format_number(a),
            format_number(b),
            format_number(c),
            format!("{:.3}", c / b.max(1e-9)),
        ]);
    }
    println!();
    table.print();
    let ratios: Vec<String> = results[1]
        .iter()
        .zip(&results[2])
        .map(|(off, on)| format!("{:.3}", on.ops_per_sec() / off.ops_per_sec().max(1e-9)))
        .collect();
    println!("per round, ops/s hot keys/off: {}", ratios.join(" "));
    println!("true top 10:  {}", truth.join(" "));
    println!("found top 10: {}", found.join(" "));
    println!(
        "matched {matched}/10, same order: {}",
        if same_order { "yes" } else { "no" }
    );
    let base = report::output_base(out_dir, "hotkeys");
    let path = report::write_json(
        &base,
        &HotKeysReport {
            scenario: "hotkeys",
            options: opts,
            runs,
            true_top10: truth,
            found_top10: found,
            matched,
            same_order,
        },
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
