//! How the operator scales: 1000 ReplicationSources with a trivial mover
//! on a real kube-apiserver + etcd (`tests/apiserver/`), the operator
//! running as its own process (`wasmover operator`). Reports the time
//! until every object has been synchronized once and the operator's peak
//! resident memory (VmHWM).
//!
//! ```sh
//! cargo xtask build-guests            # the trivial mover: hostile.wasm, mode "done"
//! cargo bench -p wasmover-operator --bench reconcile_1000 [-- COUNT]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use wasmover_operator::crd::ReplicationSource;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a number is the object count.
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let module = root().join("target/guests/wasm/hostile.wasm");
    anyhow::ensure!(
        module.exists(),
        "{} is missing: run `cargo xtask build-guests`",
        module.display()
    );

    let dir = tempfile::tempdir()?;
    let out = Command::new(root().join("tests/apiserver/start.sh"))
        .arg(dir.path())
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "tests/apiserver/start.sh failed");
    let kubeconfig = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let stop = scopeguard(dir.path().to_owned());

    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in wasmover_operator::crd::yaml().split("---\n") {
        crds.create(&PostParams::default(), &serde_yaml::from_str(doc)?)
            .await?;
    }
    let sources: Api<ReplicationSource> = Api::namespaced(client.clone(), "default");
    while sources.list(&ListParams::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut operator = Command::new(env!("CARGO_BIN_EXE_wasmover"))
        .args(["operator", "--metrics-addr", "127.0.0.1:0", "--module"])
        .arg(&module)
        .env("KUBECONFIG", &kubeconfig)
        .env("WASMOVER_LOG", "error")
        .spawn()?;
    let pid = operator.id();

    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let sources = sources.clone();
            async move {
                let rs: ReplicationSource = serde_json::from_value(json!({
                    "apiVersion": "wasmover.dev/v1alpha1",
                    "kind": "ReplicationSource",
                    "metadata": {"name": format!("rs-{i:04}")},
                    "spec": {
                        "sourcePVC": "data",
                        "trigger": {"manual": "once"},
                        "mover": {"module": "hostile", "parameters": {"hostile": "done"}},
                    },
                }))?;
                sources.create(&PostParams::default(), &rs).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();

    let done = loop {
        let list = sources.list(&ListParams::default()).await?;
        let synced = list
            .items
            .iter()
            .filter(|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.sync.last_manual_sync.as_deref())
                    == Some("once")
            })
            .count();
        if synced == count {
            break started.elapsed();
        }
        if let Some(exit) = operator.try_wait()? {
            anyhow::bail!("the operator exited: {exit}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {synced} of {count} synchronized after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let peak = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    operator.kill()?;
    operator.wait()?;
    drop(stop);
    println!(
        "{count} ReplicationSources: created in {:.1}s, all synchronized once after {:.1}s; operator peak RSS {peak}",
        created.as_secs_f64(),
        done.as_secs_f64()
    );
    Ok(())
}

/// Stops the API server when dropped.
fn scopeguard(dir: PathBuf) -> impl Drop {
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(root().join("tests/apiserver/stop.sh"))
                .arg(&self.0)
                .status();
        }
    }
    Stop(dir)
}
