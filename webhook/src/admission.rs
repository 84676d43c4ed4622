//! The admission decisions, as pure functions from an `AdmissionReview` body to the
//! review to answer with. No I/O, so they are tested without sockets.

use base64::Engine;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// An incoming `AdmissionReview` (`admission.k8s.io/v1` or `v1beta1`): only the
/// fields the decision reads. The object stays raw JSON until it is read as a
/// StaticPod, so a wrongly typed field is reported with its path, not as a
/// malformed review.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: String,
    request: Option<RequestIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: KindIn,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
struct KindIn {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// The `AdmissionReview` answered, in the same API version as the question. The
/// patch is base64 text, as the API server's own Go types encode bytes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    api_version: String,
    kind: &'static str,
    response: ResponseOut,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StatusOut {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

/// The answer to one review, with what the logs and metrics need.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview to return.
    pub review: ReviewOut,
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
    let review: ReviewIn =
        serde_json::from_slice(body).map_err(|e| BadRequest::Malformed(e.to_string()))?;
    let request = review.request.ok_or(BadRequest::MissingRequest)?;
    let mut response = ResponseOut {
        uid: request.uid.clone(),
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: Vec::new(),
    };
    let verdict = decide(hook, &request, &mut response);
    Ok(Answer {
        review: ReviewOut {
            api_version: review.api_version,
            kind: "AdmissionReview",
            response,
        },
        verdict,
        object: format!(
            "{}/{}",
            request.namespace.as_deref().unwrap_or(""),
            request.name
        ),
        uid: request.uid,
        operation: request.operation,
    })
}

fn decide(hook: Hook, request: &RequestIn, response: &mut ResponseOut) -> Verdict {
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
        return deny(response, message, 400, "BadRequest");
    }
    let Some(raw) = request.object.as_deref().filter(|raw| raw.get() != "null") else {
        // DELETE and CONNECT carry no new object; nothing to default or check.
        return Verdict::Allowed;
    };
    let name = request.name.as_str();
    let static_pod: StaticPod = match read_static_pod(raw.get()) {
        Ok(sp) => sp,
        Err(at) => {
            let message = format!("{KIND}.{GROUP} {name:?} is invalid: {at}");
            return deny(response, message, 422, "Invalid");
        }
    };
    match hook {
        Hook::Mutate => match serde_json::from_str::<Value>(raw.get()) {
            Ok(original) => mutate(response, &original, static_pod),
            Err(e) => deny(
                response,
                format!("the object is not JSON: {e}"),
                400,
                "BadRequest",
            ),
        },
        Hook::Validate => validate(response, name, &static_pod),
    }
}

/// Reads the object as a StaticPod. Tracking the field path costs time on every
/// field, so it is done only to explain a failure: `<path>: Invalid value: <why>`.
fn read_static_pod(json: &str) -> Result<StaticPod, String> {
    serde_json::from_str(json).map_err(|_| {
        let mut reader = serde_json::Deserializer::from_str(json);
        match serde_path_to_error::deserialize::<_, StaticPod>(&mut reader) {
            Err(e) => format!("{}: Invalid value: {}", e.path(), e.inner()),
            Ok(_) => "the object could not be read as a StaticPod".to_owned(),
        }
    })
}

fn mutate(response: &mut ResponseOut, original: &Value, mut sp: StaticPod) -> Verdict {
    default_static_pod(&mut sp);
    let defaulted = match serde_json::to_value(&sp) {
        Ok(value) => value,
        Err(e) => {
            return deny(
                response,
                format!("defaulting failed: {e}"),
                500,
                "InternalError",
            );
        }
    };
    let (patch, unknown) = defaulting_patch(original, &defaulted);
    response.warnings = unknown
        .iter()
        .map(|path| format!("unknown field {path:?} is ignored (a typo?)"))
        .collect();
    if patch.0.is_empty() {
        return Verdict::Allowed;
    }
    match serde_json::to_vec(&patch) {
        Ok(bytes) => {
            response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            response.patch_type = Some("JSONPatch");
            Verdict::Patched
        }
        Err(e) => deny(
            response,
            format!("defaulting failed: {e}"),
            500,
            "InternalError",
        ),
    }
}

/// The patch that turns `original` into `defaulted`, and the fields of `original`
/// the typed model does not know. Defaulting only adds and replaces, so a field
/// present in `original` but absent from `defaulted` is one the model dropped as
/// unknown: it is kept (never drop what a user wrote) and reported as a warning.
/// Status belongs to the controller and is never patched at admission.
pub fn defaulting_patch(original: &Value, defaulted: &Value) -> (Patch, Vec<String>) {
    let mut ops = Vec::new();
    let mut unknown = Vec::new();
    if let (Value::Object(old), Value::Object(new)) = (original, defaulted) {
        for (key, new_value) in new {
            if key == "status" {
                continue;
            }
            let path = PointerBuf::from_tokens([key.as_str()]);
            match old.get(key) {
                Some(old_value) => diff_into(old_value, new_value, path, &mut ops, &mut unknown),
                None => ops.push(add(path, new_value)),
            }
        }
        for key in old
            .keys()
            .filter(|k| *k != "status" && !new.contains_key(*k))
        {
            unknown.push(key.clone());
        }
    }
    (Patch(ops), unknown)
}

fn diff_into(
    old: &Value,
    new: &Value,
    path: PointerBuf,
    ops: &mut Vec<PatchOperation>,
    unknown: &mut Vec<String>,
) {
    match (old, new) {
        (Value::Object(old_map), Value::Object(new_map)) => {
            for (key, new_value) in new_map {
                let child = path.with_trailing_token(key.as_str());
                match old_map.get(key) {
                    Some(old_value) => diff_into(old_value, new_value, child, ops, unknown),
                    None => ops.push(add(child, new_value)),
                }
            }
            for key in old_map.keys().filter(|k| !new_map.contains_key(*k)) {
                unknown.push(field_path(
                    &path.with_trailing_token(key.as_str()).to_string(),
                ));
            }
        }
        (Value::Array(old_items), Value::Array(new_items))
            if old_items.len() == new_items.len() =>
        {
            for (i, (old_item, new_item)) in old_items.iter().zip(new_items).enumerate() {
                diff_into(
                    old_item,
                    new_item,
                    path.with_trailing_token(i.to_string()),
                    ops,
                    unknown,
                );
            }
        }
        _ if old == new => {}
        // A value the typed model cannot hold exactly as written (e.g. a float where an
        // integer belongs) is replaced by its canonical form.
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path,
            value: new.clone(),
        })),
    }
}

fn add(path: PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path,
        value: value.clone(),
    })
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

fn validate(response: &mut ResponseOut, name: &str, sp: &StaticPod) -> Verdict {
    let validation = validate_static_pod(sp);
    response.warnings = validation.warnings.clone();
    if validation.is_valid() {
        Verdict::Allowed
    } else {
        deny(response, validation.message(name), 422, "Invalid")
    }
}

fn deny(response: &mut ResponseOut, message: String, code: u16, reason: &'static str) -> Verdict {
    response.allowed = false;
    response.status = Some(StatusOut {
        status: "Failure",
        code,
        reason,
        message,
    });
    Verdict::Denied
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
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().expect("patch"))
            .expect("base64");
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
