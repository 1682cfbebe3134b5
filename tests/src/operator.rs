//! The operator as a replica in this process, against the test API server,
//! and its metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wasmover_operator::controller::RunOptions;
use wasmover_operator::leader::LeaseConfig;
use wasmover_operator::metrics::Metrics;

use crate::apiserver::ApiServer;

/// An operator replica running in this process, as `wasmover operator`
/// runs in a Pod: when it fails (lost the leader Lease, no API server to
/// start with), it is started again, as the kubelet restarts a container.
pub struct Operator {
    /// What it counts, as its `/metrics` shows it.
    pub metrics: Arc<Metrics>,
    /// Where its `/metrics` and `/readyz` answer.
    pub metrics_addr: SocketAddr,
    /// The replica; abort it to stop it.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operator {
    /// Starts an operator with the built-in movers and the hostile test
    /// module, collecting orphans every second.
    pub async fn start(server: &ApiServer, leader: Option<LeaseConfig>) -> Self {
        Self::start_with(
            server,
            RunOptions {
                leader,
                ..Self::options()
            },
        )
        .await
    }

    /// The options [`start`](Self::start) runs with: orphans collected
    /// every second, agents given [`AGENT_IMAGE`](crate::AGENT_IMAGE).
    pub fn options() -> RunOptions {
        RunOptions {
            gc_interval: Duration::from_secs(1),
            agent_image: Some(crate::AGENT_IMAGE.into()),
            ..RunOptions::default()
        }
    }

    /// Starts an operator with the built-in movers and the hostile test
    /// module, run with `options`.
    pub async fn start_with(server: &ApiServer, options: RunOptions) -> Self {
        let metrics = Arc::new(Metrics::default());
        let client =
            wasmover_operator::client::instrumented(server.config().await, metrics.clone())
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let router = wasmover_operator::metrics::router(metrics.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let run_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let engine = crate::engine();
            loop {
                let mut catalog = wasmover_operator::builtin::catalog(&engine).unwrap();
                catalog.register(crate::load(&engine, "hostile")).unwrap();
                let run = wasmover_operator::controller::run(
                    client.clone(),
                    catalog,
                    run_metrics.clone(),
                    options.clone(),
                );
                if let Err(e) = run.await {
                    eprintln!("replica restarts: {e:#}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                return anyhow::Ok(());
            }
        });
        Self {
            metrics,
            metrics_addr,
            task,
        }
    }

    /// Whether this replica holds the leader Lease.
    pub fn leading(&self) -> bool {
        self.metrics.leader.get() == 1
    }
}

/// A plain HTTP/1.1 GET; returns the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
