//! Runs `zonecache-bench compare` for a couple of seconds against real
//! memcached and zonecached processes: the JSON and the plot must appear and
//! the figures must be sane (no timing thresholds: this is not a speed test).

use std::process::Command;

#[test]
fn compare_writes_json_and_plot_with_sane_figures() {
    // Build the server this binary will start, with the same profile.
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "zonecache-server",
            "--bin",
            "zonecached",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success());
    let out = std::env::temp_dir().join(format!("zc-bench-compare-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_zonecache-bench"))
        .args([
            "compare",
            "--pairs",
            "1",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--keys",
            "2000",
        ])
        .args(["--connections", "4", "--memory", "16", "--quiet", "--out"])
        .arg(&out)
        .output()
        .expect("run zonecache-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("closed: ops/s"), "{stdout}");

    let files: Vec<_> = std::fs::read_dir(&out)
        .expect("results dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let json = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON file");
    let svg = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "svg"))
        .expect("an SVG file");
    assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4, "closed and open loop, both servers");
    for run in runs {
        let s = &run["summary"];
        assert!(s["ops"].as_u64().unwrap() > 0, "{run}");
        assert!(s["p99_us"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(s["timeouts"].as_u64(), Some(0), "{run}");
        assert!(s["errors"].as_object().unwrap().is_empty(), "{run}");
        // the preloaded keys are all there, so every get hits
        assert_eq!(s["misses"].as_u64(), Some(0), "{run}");
    }
    assert!(report["machine"]["memcached_version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    assert!(report["machine"]["zonecached_version"]
        .as_str()
        .unwrap()
        .contains("zonecache"));
    let _ = std::fs::remove_dir_all(out);
}
