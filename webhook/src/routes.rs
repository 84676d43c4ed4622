//! The HTTP surface: warp filters for the two webhooks and the admin endpoints.
//! Built as values so tests drive them in-process without sockets.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::admission::{self, Hook};
use crate::metrics::Metrics;

/// Path of the mutating webhook (upstream's).
pub const MUTATE_PATH: &str = "mutate-apps-openyurt-io-v1alpha1-staticpod";
/// Path of the validating webhook (upstream's).
pub const VALIDATE_PATH: &str = "validate-apps-openyurt-io-v1alpha1-staticpod";

/// Shared state of the admission routes.
pub struct Admission {
    /// Largest body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
}

/// `POST /mutate-…` and `POST /validate-…`.
pub fn admission_routes(
    state: Arc<Admission>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let hook = warp::path(MUTATE_PATH)
        .map(|| Hook::Mutate)
        .or(warp::path(VALIDATE_PATH).map(|| Hook::Validate))
        .unify();
    let limit = state.max_body_bytes;
    warp::post()
        .and(hook)
        .and(warp::path::end())
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .map(move |hook: Hook, body: Bytes| answer(&state, hook, &body))
        .recover(plain_rejection)
        .unify()
}

fn answer(state: &Admission, hook: Hook, body: &[u8]) -> warp::reply::Response {
    let started = Instant::now();
    // The decision is pure code over outside data; should it ever panic, that one
    // request fails and the server keeps serving.
    let outcome = catch_unwind(AssertUnwindSafe(|| admission::review(hook, body)));
    let (response, verdict) = match outcome {
        Ok(Ok(answer)) => {
            tracing::info!(
                uid = %answer.uid,
                webhook = hook.as_str(),
                kind = "StaticPod",
                operation = %answer.operation,
                object = %answer.object,
                verdict = answer.verdict.as_str(),
                "admission review answered"
            );
            (
                warp::reply::json(&answer.review).into_response(),
                answer.verdict.as_str(),
            )
        }
        Ok(Err(bad)) => {
            tracing::warn!(webhook = hook.as_str(), verdict = "bad_request", reason = %bad, "admission request refused");
            (
                text(StatusCode::BAD_REQUEST, bad.to_string()),
                "bad_request",
            )
        }
        Err(_) => {
            tracing::error!(
                webhook = hook.as_str(),
                verdict = "panic",
                "admission handler panicked"
            );
            (
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error while deciding the review".into(),
                ),
                "panic",
            )
        }
    };
    state
        .metrics
        .observe(hook.as_str(), verdict, started.elapsed().as_secs_f64());
    response
}

fn text(status: StatusCode, message: String) -> warp::reply::Response {
    warp::reply::with_status(format!("{message}\n"), status).into_response()
}

/// Turns warp's rejections into one-line plain-text answers.
async fn plain_rejection(rejection: Rejection) -> Result<warp::reply::Response, Rejection> {
    if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        return Ok(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the webhook accepts".into(),
        ));
    }
    if rejection.find::<warp::reject::LengthRequired>().is_some() {
        return Ok(text(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required".into(),
        ));
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admission reviews are POSTed".into(),
        ));
    }
    Err(rejection)
}

/// `GET /healthz`, `GET /readyz`, `GET /metrics` on the plain-HTTP admin port.
pub fn admin_routes(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let health = warp::get()
        .and(warp::path("healthz").or(warp::path("readyz")).unify())
        .and(warp::path::end())
        .map(|| text(StatusCode::OK, "ok".into()));
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(move || {
            warp::reply::with_header(
                metrics.encode(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });
    health.or(metrics).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_body_bytes: u64) -> Arc<Admission> {
        Arc::new(Admission {
            max_body_bytes,
            metrics: Arc::new(Metrics::default()),
        })
    }

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"apps.openyurt.io","version":"v1alpha1","kind":"StaticPod"},"resource":{"group":"apps.openyurt.io","version":"v1alpha1","resource":"staticpods"},"name":"nginx","namespace":"default","operation":"CREATE","userInfo":{},"object":{"apiVersion":"apps.openyurt.io/v1alpha1","kind":"StaticPod","metadata":{"name":"nginx","namespace":"default"},"spec":{"staticPodManifest":"../x","template":{"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}}}}"#;

    #[tokio::test]
    async fn validate_route_denies_and_counts() {
        let state = state(1 << 20);
        let routes = admission_routes(state.clone());
        let res = warp::test::request()
            .method("POST")
            .path(&format!("/{VALIDATE_PATH}"))
            .body(REVIEW)
            .reply(&routes)
            .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(res.body()).expect("json");
        assert_eq!(body["response"]["allowed"], false);
        assert!(
            body["response"]["status"]["message"]
                .as_str()
                .expect("msg")
                .contains("spec.staticPodManifest")
        );
        let metrics = state.metrics.encode();
        assert!(
            metrics.contains(r#"staticpod_webhook_admission_requests_total{webhook="validate",verdict="denied"} 1"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn malformed_and_oversize_bodies_get_one_line_reasons() {
        let routes = admission_routes(state(64));
        let res = warp::test::request()
            .method("POST")
            .path(&format!("/{MUTATE_PATH}"))
            .body("{nope")
            .reply(&routes)
            .await;
        assert_eq!(res.status(), 400);
        let text = String::from_utf8_lossy(res.body()).into_owned();
        assert!(
            text.starts_with("the body is not an AdmissionReview") && text.lines().count() == 1,
            "{text}"
        );

        let res = warp::test::request()
            .method("POST")
            .path(&format!("/{MUTATE_PATH}"))
            .body(REVIEW)
            .reply(&routes)
            .await;
        assert_eq!(res.status(), 413);

        let res = warp::test::request()
            .method("GET")
            .path(&format!("/{MUTATE_PATH}"))
            .reply(&routes)
            .await;
        assert_eq!(res.status(), 405);
    }

    #[tokio::test]
    async fn admin_routes_serve_health_and_metrics() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe("mutate", "patched", 0.001);
        let routes = admin_routes(metrics);
        for path in ["/healthz", "/readyz"] {
            let res = warp::test::request().path(path).reply(&routes).await;
            assert_eq!(res.status(), 200);
        }
        let res = warp::test::request().path("/metrics").reply(&routes).await;
        let text = String::from_utf8_lossy(res.body()).into_owned();
        assert!(
            text.contains("staticpod_webhook_admission_duration_seconds_bucket"),
            "{text}"
        );
    }
}
