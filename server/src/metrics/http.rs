//! The HTTP side of `--metrics-port`, on hyper: GET `/metrics`, `/healthz`
//! (the process answers) and `/readyz` (200 when ready for client reads,
//! 503 with the reason otherwise; `?exclude=drain` leaves the zone's drain
//! out, as Kubernetes's own `/readyz?exclude=<check>` does — for rolling
//! updates of a drained zone). Anything else is 404.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::net::Front;

/// The text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static header is valid")
}

fn answer(front: &Front, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, TEXT_FORMAT, super::scrape(front)),
        "/healthz" => reply(StatusCode::OK, plain, "ok\n".into()),
        "/readyz" => match super::unready(front, !excludes(req, "drain")) {
            None => reply(StatusCode::OK, plain, "ready\n".into()),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, plain, format!("{why}\n")),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            plain,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Whether the query says `exclude=<check>`.
fn excludes(req: &Request<Incoming>, check: &str) -> bool {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.strip_prefix("exclude=") == Some(check))
}

/// Serves the endpoint on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, front: Arc<Front>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let front = front.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(answer(&front, &req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}
