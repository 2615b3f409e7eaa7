//! `docker-compose.yml` cannot run here (no Docker engine), so this test
//! reads it and checks it agrees with the cluster config format: every
//! service mounts a config that parses, names that service as its node,
//! gives the service's address, and all configs describe the same 3 × 2
//! cluster; the Dockerfile it builds from exists.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zonecache_server::cluster::topology::NodeTopology;

/// Where compose mounts the secret `cluster_secret`.
const SECRET_MOUNT: &str = "/run/secrets/cluster_secret";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn compose_file_agrees_with_the_cluster_configs() {
    let text =
        std::fs::read_to_string(repo().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let services = compose["services"].as_mapping().expect("services");
    assert_eq!(services.len(), 6, "3 zones x 2 nodes");
    assert!(repo().join("Dockerfile").exists());
    assert_eq!(
        compose["secrets"]["cluster_secret"]["environment"].as_str(),
        Some("ZONECACHE_CLUSTER_SECRET")
    );
    let secrets = std::env::temp_dir().join(format!("zc-compose-{}", std::process::id()));
    std::fs::create_dir_all(&secrets).unwrap();
    let secret = secrets.join("secret");
    std::fs::write(&secret, "a cluster secret of enough bytes").unwrap();
    let mut layouts = Vec::new();
    let mut zones_seen = BTreeMap::<String, usize>::new();
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        assert_eq!(
            svc["build"].as_str(),
            Some("."),
            "{name} builds from the Dockerfile"
        );
        let command: Vec<&str> = svc["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let config_arg = command
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1])
            .expect("--config");
        // The mounted file behind that path.
        let mount = svc["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .filter_map(|v| v.as_str())
            .find(|v| v.split(':').nth(1) == Some(config_arg))
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {config_arg}"));
        let host_path = repo().join(mount.split(':').next().unwrap());
        // The secret compose mounts, read here from a file of the test's.
        assert_eq!(
            svc["secrets"][0].as_str(),
            Some("cluster_secret"),
            "{name} gets the cluster secret"
        );
        let text = std::fs::read_to_string(&host_path).unwrap();
        assert!(
            text.contains(&format!("secret_file = \"{SECRET_MOUNT}\"")),
            "{name}"
        );
        let config = secrets.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            text.replace(SECRET_MOUNT, secret.to_str().unwrap()),
        )
        .unwrap();
        let topology = NodeTopology::load(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(topology.me.id, name, "the config names its own service");
        let ip = svc["networks"]["zonecache"]["ipv4_address"]
            .as_str()
            .expect("address");
        assert_eq!(
            topology
                .me
                .addr
                .socket_addr()
                .expect("an IP")
                .ip()
                .to_string(),
            ip,
            "{name}: address agrees"
        );
        assert_eq!(topology.me.addr.port(), 11211);
        let zone = svc["labels"]["zonecache.zone"]
            .as_str()
            .expect("zone label");
        assert_eq!(topology.zones[0].name, zone, "{name}: home zone agrees");
        *zones_seen.entry(zone.to_string()).or_default() += 1;
        let mut layout: Vec<(String, Vec<String>)> = topology
            .zones
            .iter()
            .map(|z| {
                (
                    z.name.clone(),
                    z.nodes
                        .iter()
                        .map(|n| format!("{}@{}", n.id, n.addr))
                        .collect(),
                )
            })
            .collect();
        layout.sort();
        layouts.push(layout);
    }
    assert!(
        layouts.windows(2).all(|w| w[0] == w[1]),
        "every node sees the same cluster"
    );
    assert_eq!(
        zones_seen.into_iter().collect::<Vec<_>>(),
        vec![("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]
    );
    let _ = std::fs::remove_dir_all(&secrets);
}
