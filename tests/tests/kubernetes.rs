//! The Kubernetes manifests in `deploy/k8s` cannot be applied here (no
//! cluster); `scripts/check-k8s` validates them against the Kubernetes
//! schema, and this test checks they agree with zonecache: the ConfigMap's
//! topology parses with the nodes' own parser for every pod's name, names
//! each pod by its StatefulSet DNS name, and each StatefulSet runs its zone's
//! nodes pinned to a cloud zone, with the probes, PDB and services a
//! rolling update relies on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml::Value;
use zonecache_server::cluster::topology::NodeTopology;

fn k8s_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// Every resource of every manifest, by (kind, name).
fn resources() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(k8s_dir()).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml")
            || path.file_name() == Some("kustomization.yaml".as_ref())
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("manifest");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).expect("valid YAML");
            let kind = value["kind"].as_str().expect("kind").to_string();
            let name = value["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string();
            assert_eq!(
                value["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("zonecache"),
                "zonecache"
            );
            out.insert((kind, name), value);
        }
    }
    out
}

fn get<'a>(all: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    all.get(&(kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_manifests_agree_with_the_topology_and_each_other() {
    let all = resources();
    let config = get(&all, "ConfigMap", "zonecache-topology")["data"]["cluster.toml"]
        .as_str()
        .expect("cluster.toml");
    let dir = std::env::temp_dir().join(format!("zc-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The nodes read the secret from the Secret's mount; here from a file
    // of the test's.
    let secret_mount = "/etc/zonecache-secret";
    assert!(
        config.contains(&format!("secret_file = \"{secret_mount}/secret\"")),
        "{config}"
    );
    let secret = dir.join("secret");
    std::fs::write(&secret, "a cluster secret of enough bytes\n").unwrap();
    let config = config.replace(&format!("{secret_mount}/secret"), secret.to_str().unwrap());
    let path = dir.join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let mut pods = 0;
    for zone in ["a", "b", "c"] {
        let set_name = format!("zc-{zone}");
        let set = get(&all, "StatefulSet", &set_name);
        let spec = &set["spec"];
        assert_eq!(spec["serviceName"].as_str(), Some(set_name.as_str()));
        let replicas = spec["replicas"].as_u64().expect("replicas");
        let pod = &spec["template"]["spec"];
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels["zonecache.io/zone"].as_str(), Some(zone));
        // Pinned to one cloud zone.
        let term = &pod["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchExpressions"][0];
        assert_eq!(term["key"].as_str(), Some("topology.kubernetes.io/zone"));
        let container = &pod["containers"][0];
        let args = strings(&container["args"]);
        let arg = |flag: &str| {
            args.windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1])
                .unwrap_or_else(|| panic!("{set_name}: no {flag}"))
        };
        assert_eq!(arg("--node"), "$(POD_NAME)");
        assert_eq!(
            container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.name")
        );
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some("topology"))
            .expect("topology mount");
        let config_path = arg("--config");
        let mount_path = mount["mountPath"].as_str().unwrap();
        assert_eq!(config_path, format!("{mount_path}/cluster.toml"));
        let secret_volume = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(secret_mount))
            .expect("the cluster secret's mount");
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == secret_volume["name"])
            .expect("the secret's volume");
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some("zonecache-cluster-secret")
        );
        assert_eq!(arg("-p"), "11211");
        assert_eq!(arg("--batch-port"), "11212");
        // Ready only when warm (the node's /readyz on its metrics port);
        // drained before it stops.
        let metrics_port = arg("--metrics-port");
        let ports = container["ports"].as_sequence().unwrap();
        let metrics = ports
            .iter()
            .find(|p| p["name"].as_str() == Some("metrics"))
            .expect("a metrics port");
        assert_eq!(
            metrics["containerPort"].as_u64().unwrap().to_string(),
            metrics_port
        );
        let probe = &container["readinessProbe"]["httpGet"];
        assert_eq!(probe["port"].as_str(), Some("metrics"));
        assert!(probe["path"].as_str().unwrap().starts_with("/readyz"));
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        // The preStop hook proves the cluster secret the config names.
        let hook = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
        assert_eq!(hook[..2], ["zonecache", "leave"]);
        assert!(
            hook.windows(2).any(|w| w == ["--config", config_path]),
            "{hook:?}"
        );
        // Every pod of the set is a node of this zone, at its DNS name.
        for ordinal in 0..replicas {
            let id = format!("{set_name}-{ordinal}");
            let t = NodeTopology::load_as(&path, Some(&id)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.zones[0].name, zone, "{id}'s home zone");
            assert_eq!(
                t.me.addr.to_string(),
                format!("{id}.{set_name}.zonecache.svc.cluster.local:11211")
            );
            assert_eq!(
                t.me.batch_addr.as_ref().map(|a| a.port()),
                Some(11212),
                "{id}"
            );
            assert_eq!(t.zones[0].nodes.len() as u64, replicas, "zone {zone}");
            pods += 1;
        }
        // The headless service publishes warming pods (peers must reach
        // them); the client service and the PDB cover the zone.
        let headless = &get(&all, "Service", &set_name)["spec"];
        assert_eq!(headless["clusterIP"].as_str(), Some("None"));
        assert_eq!(headless["publishNotReadyAddresses"].as_bool(), Some(true));
        let client = &get(&all, "Service", &format!("zonecache-{zone}"))["spec"];
        assert_eq!(client["selector"]["zonecache.io/zone"].as_str(), Some(zone));
        let pdb = &get(&all, "PodDisruptionBudget", &set_name)["spec"];
        assert_eq!(pdb["maxUnavailable"].as_u64(), Some(1));
        assert_eq!(
            pdb["selector"]["matchLabels"]["zonecache.io/zone"].as_str(),
            Some(zone)
        );
    }
    let t = NodeTopology::load_as(&path, Some("zc-a-0")).unwrap();
    assert_eq!(t.zones.len(), 3);
    assert_eq!(pods, t.zones.iter().map(|z| z.nodes.len()).sum::<usize>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&text).unwrap();
    let mut listed: Vec<&str> = strings(&k["resources"]);
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
}
