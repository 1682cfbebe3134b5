//! The operator's Kubernetes client: kube-rs's default stack with every
//! API request timed and counted by verb and status code
//! (`wasmover_kube_request_duration_seconds`).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::{Layer, Service};

use crate::metrics::{Metrics, RequestLabels};

/// A client for `config` whose requests land in `metrics`.
pub fn instrumented(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&Instrument { metrics })
        .build())
}

/// Wraps a service so that each request is recorded.
#[derive(Clone)]
struct Instrument {
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for Instrument {
    type Service = Instrumented<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Instrumented {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The wrapped service.
#[derive(Clone)]
struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<Body>> for Instrumented<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => r.status().as_str().to_owned(),
                Err(_) => "error".to_owned(),
            };
            // A watch's future resolves with the response headers, so its
            // duration is the time to establish it, like a request's.
            metrics
                .kube_request_duration
                .get_or_create(&RequestLabels {
                    verb: verb.into(),
                    code,
                })
                .observe(started.elapsed().as_secs_f64());
            response
        })
    }
}

/// The Kubernetes verb of a request, as the API server's audit log names it.
fn verb(method: &Method, uri: &Uri) -> &'static str {
    let query = uri.query().unwrap_or_default();
    match *method {
        Method::GET
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        Method::GET if names_an_object(uri.path()) => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if names_an_object(uri.path()) => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// Whether a path names one object rather than a collection:
/// `/api/v1[/namespaces/NS]/RESOURCE/NAME[/SUB]` or the same under
/// `/apis/GROUP/VERSION`.
fn names_an_object(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    rest.len() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_api_servers_naming() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/a/secrets/key", "get"),
            (Method::GET, "/api/v1/namespaces/a/secrets", "list"),
            (Method::GET, "/api/v1/namespaces/a", "get"),
            (Method::GET, "/api/v1/namespaces", "list"),
            (
                Method::GET,
                "/apis/wasmover.dev/v1alpha1/replicationsources?watch=true&timeoutSeconds=290",
                "watch",
            ),
            (
                Method::PATCH,
                "/apis/wasmover.dev/v1alpha1/namespaces/a/replicationsources/x/status",
                "patch",
            ),
            (Method::GET, "/apis/batch/v1/namespaces/a/jobs/j", "get"),
            (Method::POST, "/apis/batch/v1/namespaces/a/jobs", "create"),
            (
                Method::DELETE,
                "/apis/batch/v1/namespaces/a/jobs/j",
                "delete",
            ),
            (
                Method::DELETE,
                "/apis/batch/v1/namespaces/a/jobs",
                "deletecollection",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                "update",
            ),
        ];
        for (method, uri, want) in cases {
            assert_eq!(verb(&method, &uri.parse().unwrap()), want, "{method} {uri}");
        }
    }
}
