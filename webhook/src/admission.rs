//! The admission decisions, as pure functions from an `AdmissionReview` body to the
//! review to answer with. No I/O, so they are tested without sockets.

use json_patch::{Patch, PatchOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;
use staticpod_api::types::{GROUP, KIND, VERSION};
use staticpod_api::{StaticPod, default_static_pod, validate_static_pod};

/// Which webhook is being asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Defaulting: answers with a JSON Patch.
    Mutate,
    /// Validation: allows or denies, with warnings.
    Validate,
}

impl Hook {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// What the webhook decided, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed unchanged.
    Allowed,
    /// Allowed with a patch (mutate).
    Patched,
    /// Denied.
    Denied,
}

impl Verdict {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
        }
    }
}

/// A request body that is not an AdmissionReview at all: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// An AdmissionReview without `request`.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
}

/// The answer to one review, with what the logs and metrics need.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview to return.
    pub review: AdmissionReview<DynamicObject>,
    /// The decision.
    pub verdict: Verdict,
    /// `namespace/name` of the object, for logs.
    pub object: String,
    /// The request UID, for logs.
    pub uid: String,
    /// The operation (CREATE, UPDATE, …), for logs.
    pub operation: String,
}

/// Decides one admission review. `admission.k8s.io/v1` and `v1beta1` are both
/// accepted; the answer uses the version of the question.
pub fn review(hook: Hook, body: &[u8]) -> Result<Answer, BadRequest> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| BadRequest::Malformed(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| BadRequest::MissingRequest)?;
    let object = format!(
        "{}/{}",
        request.namespace.as_deref().unwrap_or(""),
        request.name
    );
    let (response, verdict) = decide(hook, &request);
    Ok(Answer {
        review: response.into_review(),
        verdict,
        object,
        uid: request.uid.clone(),
        operation: format!("{:?}", request.operation).to_uppercase(),
    })
}

fn decide(hook: Hook, request: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, Verdict) {
    let response = AdmissionResponse::from(request);
    let kind = &request.kind;
    if (
        kind.group.as_str(),
        kind.version.as_str(),
        kind.kind.as_str(),
    ) != (GROUP, VERSION, KIND)
    {
        let message = format!(
            "this webhook admits {GROUP}/{VERSION} {KIND} only, not {}/{} {}; check the rules of \
             the webhook configuration",
            kind.group, kind.version, kind.kind
        );
        return (deny(response, message, 400, "BadRequest"), Verdict::Denied);
    }
    let Some(object) = &request.object else {
        // DELETE and CONNECT carry no new object; nothing to default or check.
        return (response, Verdict::Allowed);
    };
    let original = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(e) => {
            let message = format!("the object could not be read: {e}");
            return (deny(response, message, 400, "BadRequest"), Verdict::Denied);
        }
    };
    let name = request.name.as_str();
    let static_pod: StaticPod = match serde_path_to_error::deserialize(&original) {
        Ok(sp) => sp,
        Err(e) => {
            let message = format!(
                "{KIND}.{GROUP} {name:?} is invalid: {}: Invalid value: {}",
                e.path(),
                e.inner()
            );
            return (deny(response, message, 422, "Invalid"), Verdict::Denied);
        }
    };
    match hook {
        Hook::Mutate => mutate(response, &original, static_pod),
        Hook::Validate => validate(response, name, &static_pod),
    }
}

fn mutate(
    response: AdmissionResponse,
    original: &Value,
    mut sp: StaticPod,
) -> (AdmissionResponse, Verdict) {
    default_static_pod(&mut sp);
    let defaulted = match serde_json::to_value(&sp) {
        Ok(value) => value,
        Err(e) => {
            return (
                response.deny(format!("defaulting failed: {e}")),
                Verdict::Denied,
            );
        }
    };
    let (patch, unknown) = defaulting_patch(original, &defaulted);
    let mut response = response;
    if !unknown.is_empty() {
        response.warnings = Some(
            unknown
                .iter()
                .map(|path| format!("unknown field {path:?} is ignored (a typo?)"))
                .collect(),
        );
    }
    if patch.0.is_empty() {
        return (response, Verdict::Allowed);
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => (patched, Verdict::Patched),
        Err(e) => (
            response.deny(format!("defaulting failed: {e}")),
            Verdict::Denied,
        ),
    }
}

/// The patch that turns `original` into `defaulted`, and the fields of `original`
/// the typed model does not know. Defaulting only adds and replaces, so every
/// removal in the raw diff is an unknown field: those are kept (never drop what a
/// user wrote) and reported as warnings.
pub fn defaulting_patch(original: &Value, defaulted: &Value) -> (Patch, Vec<String>) {
    let diff = json_patch::diff(original, defaulted);
    let mut unknown = Vec::new();
    let operations = diff
        .0
        .into_iter()
        .filter(|op| match op {
            PatchOperation::Remove(remove) => {
                let path = remove.path.to_string();
                if !path.starts_with("/status") {
                    unknown.push(field_path(&path));
                }
                false
            }
            // Status belongs to the controller; never patch it at admission.
            other => !other.path().to_string().starts_with("/status"),
        })
        .collect();
    (Patch(operations), unknown)
}

/// `/spec/template/spec/containers/0/imagee` → `spec.template.spec.containers[0].imagee`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if token.chars().all(|c| c.is_ascii_digit()) && !token.is_empty() {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

fn validate(
    response: AdmissionResponse,
    name: &str,
    sp: &StaticPod,
) -> (AdmissionResponse, Verdict) {
    let validation = validate_static_pod(sp);
    let mut response = response;
    if !validation.warnings.is_empty() {
        response.warnings = Some(validation.warnings.clone());
    }
    if validation.is_valid() {
        (response, Verdict::Allowed)
    } else {
        (
            deny(response, validation.message(name), 422, "Invalid"),
            Verdict::Denied,
        )
    }
}

fn deny(
    response: AdmissionResponse,
    message: String,
    code: u16,
    reason: &str,
) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = code;
    response.result.reason = reason.into();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review_body(api_version: &str, operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "apps.openyurt.io", "version": "v1alpha1", "kind": "StaticPod"},
                "resource": {"group": "apps.openyurt.io", "version": "v1alpha1", "resource": "staticpods"},
                "name": "nginx",
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
                "dryRun": false
            }
        }))
        .expect("json")
    }

    fn seed(strategy: Value) -> Value {
        json!({
            "apiVersion": "apps.openyurt.io/v1alpha1",
            "kind": "StaticPod",
            "metadata": {"name": "nginx", "namespace": "default"},
            "spec": {
                "staticPodManifest": "nginx",
                "upgradeStrategy": strategy,
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.19.1"}]}}
            }
        })
    }

    fn response_of(answer: &Answer) -> Value {
        serde_json::to_value(&answer.review).expect("json")["response"].clone()
    }

    /// The patch as the API server reads it (kube serialises the bytes as a JSON
    /// array of numbers, which Go decodes into `[]byte` like base64 text).
    fn patch_of(answer: &Answer) -> Value {
        let response = response_of(answer);
        let bytes: Vec<u8> =
            serde_json::from_value(response["patch"].clone()).expect("patch bytes");
        serde_json::from_slice(&bytes).expect("patch JSON")
    }

    #[test]
    fn mutate_adds_exactly_the_defaults() {
        let body = review_body(
            "admission.k8s.io/v1",
            "CREATE",
            seed(json!({"type": "auto"})),
        );
        let answer = review(Hook::Mutate, &body).expect("review");
        assert_eq!(answer.verdict, Verdict::Patched);
        let response = response_of(&answer);
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = patch_of(&answer);
        let ops = patch.as_array().expect("ops");
        let find = |path: &str| ops.iter().find(|op| op["path"] == path).cloned();
        assert_eq!(
            find("/spec/upgradeStrategy/maxUnavailable").expect("maxUnavailable")["value"],
            "10%"
        );
        assert_eq!(
            find("/spec/revisionHistoryLimit").expect("limit")["value"],
            10
        );
        assert!(find("/spec/template/metadata").is_some(), "{patch:#}");
        assert!(ops.iter().all(|op| op["op"] != "remove"), "{patch:#}");
        assert!(
            ops.iter()
                .all(|op| !op["path"].as_str().unwrap_or("").starts_with("/status"))
        );

        // Applying the patch gives what defaulting gives.
        let mut patched = seed(json!({"type": "auto"}));
        json_patch::patch(
            &mut patched,
            &serde_json::from_value::<Patch>(patch).expect("patch"),
        )
        .expect("apply");
        let mut sp: StaticPod = serde_json::from_value(seed(json!({"type": "auto"}))).expect("sp");
        default_static_pod(&mut sp);
        assert_eq!(patched, serde_json::to_value(&sp).expect("json"));
    }

    #[test]
    fn mutate_answers_without_a_patch_when_nothing_changes() {
        let mut sp: StaticPod = serde_json::from_value(seed(json!({"type": "auto"}))).expect("sp");
        default_static_pod(&mut sp);
        let body = review_body(
            "admission.k8s.io/v1",
            "UPDATE",
            serde_json::to_value(&sp).expect("json"),
        );
        let answer = review(Hook::Mutate, &body).expect("review");
        assert_eq!(answer.verdict, Verdict::Allowed);
        assert!(response_of(&answer).get("patch").is_none());
    }

    #[test]
    fn mutate_normalises_ota_and_keeps_unknown_fields_with_a_warning() {
        let mut object = seed(json!({"type": "OTA"}));
        object["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("typo");
        let body = review_body("admission.k8s.io/v1beta1", "CREATE", object);
        let answer = review(Hook::Mutate, &body).expect("review");
        let review_json = serde_json::to_value(&answer.review).expect("json");
        assert_eq!(review_json["apiVersion"], "admission.k8s.io/v1beta1");
        let patch = patch_of(&answer);
        let ops = patch.as_array().expect("ops");
        assert!(
            ops.iter()
                .any(|op| op["path"] == "/spec/upgradeStrategy/type" && op["value"] == "ota")
        );
        assert!(
            !ops.iter()
                .any(|op| op["path"] == "/spec/upgradeStrategy/maxUnavailable")
        );
        assert!(ops.iter().all(|op| op["op"] != "remove"), "{patch:#}");
        let warnings = response_of(&answer)["warnings"].clone();
        assert_eq!(
            warnings,
            json!([
                "unknown field \"spec.template.spec.containers[0].imagee\" is ignored (a typo?)"
            ])
        );
    }

    #[test]
    fn validate_allows_the_seed_and_denies_with_kubernetes_messages() {
        let body = review_body(
            "admission.k8s.io/v1",
            "CREATE",
            seed(json!({"type": "auto", "maxUnavailable": 3})),
        );
        let answer = review(Hook::Validate, &body).expect("review");
        assert_eq!(answer.verdict, Verdict::Allowed);
        assert_eq!(answer.object, "default/nginx");

        let body = review_body(
            "admission.k8s.io/v1",
            "CREATE",
            seed(json!({"type": "canary"})),
        );
        let answer = review(Hook::Validate, &body).expect("review");
        assert_eq!(answer.verdict, Verdict::Denied);
        let response = response_of(&answer);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 422);
        assert_eq!(
            response["status"]["message"],
            r#"StaticPod.apps.openyurt.io "nginx" is invalid: spec.upgradeStrategy.type: Unsupported value: "canary": supported values: "auto", "ota""#
        );
    }

    #[test]
    fn validate_warns_about_max_unavailable_under_ota() {
        let body = review_body(
            "admission.k8s.io/v1",
            "CREATE",
            seed(json!({"type": "ota", "maxUnavailable": 2})),
        );
        let answer = review(Hook::Validate, &body).expect("review");
        assert_eq!(answer.verdict, Verdict::Allowed);
        let warnings = response_of(&answer)["warnings"].clone();
        assert!(
            warnings[0]
                .as_str()
                .expect("warning")
                .contains("ignored in ota mode")
        );
    }

    #[test]
    fn wrongly_typed_fields_are_denied_with_their_path() {
        let mut object = seed(json!({"type": "auto"}));
        object["spec"]["template"]["spec"]["containers"] = json!("nginx");
        for hook in [Hook::Mutate, Hook::Validate] {
            let body = review_body("admission.k8s.io/v1", "CREATE", object.clone());
            let answer = review(hook, &body).expect("review");
            assert_eq!(answer.verdict, Verdict::Denied);
            let message = response_of(&answer)["status"]["message"]
                .as_str()
                .expect("msg")
                .to_owned();
            assert!(
                message.starts_with(r#"StaticPod.apps.openyurt.io "nginx" is invalid: spec.template.spec.containers: "#),
                "{message}"
            );
        }
    }

    #[test]
    fn the_wrong_kind_is_denied() {
        let mut body: Value = serde_json::from_slice(&review_body(
            "admission.k8s.io/v1",
            "CREATE",
            seed(json!({})),
        ))
        .expect("json");
        body["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        let answer =
            review(Hook::Validate, &serde_json::to_vec(&body).expect("json")).expect("review");
        assert_eq!(answer.verdict, Verdict::Denied);
        assert!(
            response_of(&answer)["status"]["message"]
                .as_str()
                .expect("msg")
                .contains("not /v1 Pod")
        );
    }

    #[test]
    fn bodies_that_are_not_reviews_are_bad_requests() {
        assert!(matches!(
            review(Hook::Validate, b"{not json"),
            Err(BadRequest::Malformed(_))
        ));
        assert!(matches!(
            review(Hook::Validate, b"[]"),
            Err(BadRequest::Malformed(_))
        ));
        assert!(matches!(
            review(
                Hook::Validate,
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#
            ),
            Err(BadRequest::MissingRequest)
        ));
    }

    #[test]
    fn field_paths_read_like_kubernetes() {
        assert_eq!(
            field_path("/spec/template/spec/containers/0/imagee"),
            "spec.template.spec.containers[0].imagee"
        );
        assert_eq!(field_path("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
