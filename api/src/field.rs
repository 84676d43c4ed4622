//! Field errors in Kubernetes' shape (`k8s.io/apimachinery/pkg/util/validation/field`),
//! so a rejected StaticPod reads like any other rejected Kubernetes object.

use std::fmt;

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The field must be set.
    Required,
    /// The value breaks a rule; the detail says which.
    Invalid,
    /// The value is not one of a fixed set.
    NotSupported(Vec<String>),
    /// The field may not be used here.
    Forbidden,
    /// The value repeats one given earlier.
    Duplicate,
    /// The value names something that does not exist.
    NotFound,
    /// The value is longer than allowed.
    TooLong(usize),
}

/// A value quoted in an error: strings are quoted, numbers are not, as Kubernetes
/// prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A string value.
    Str(String),
    /// An integer value.
    Int(i64),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(&quote(s)),
            Self::Int(n) => write!(f, "{n}"),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}
impl From<&String> for FieldValue {
    fn from(s: &String) -> Self {
        Self::Str(s.clone())
    }
}
impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}
impl From<i32> for FieldValue {
    fn from(n: i32) -> Self {
        Self::Int(n.into())
    }
}
impl From<&i32> for FieldValue {
    fn from(n: &i32) -> Self {
        Self::Int((*n).into())
    }
}
impl From<i64> for FieldValue {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

/// One problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.template.spec.containers[0].image`.
    pub path: String,
    /// What kind of problem it is.
    pub kind: ErrorKind,
    /// The offending value, when there is one worth quoting.
    pub value: Option<FieldValue>,
    /// Why, and what would be accepted.
    pub detail: String,
}

impl FieldError {
    /// The field must be set.
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }
    /// The value breaks a rule.
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<FieldValue>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::Invalid,
            value: Some(value.into()),
            detail: detail.into(),
        }
    }
    /// The value is not among `supported`.
    pub fn not_supported(
        path: impl Into<String>,
        value: impl Into<FieldValue>,
        supported: &[&str],
    ) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::NotSupported(supported.iter().map(|s| s.to_string()).collect()),
            value: Some(value.into()),
            detail: String::new(),
        }
    }
    /// The field may not be used.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }
    /// The value was already used.
    pub fn duplicate(path: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::Duplicate,
            value: Some(value.into()),
            detail: String::new(),
        }
    }
    /// The value refers to something missing.
    pub fn not_found(path: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::NotFound,
            value: Some(value.into()),
            detail: String::new(),
        }
    }
    /// The value is over `max` characters.
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        Self {
            path: path.into(),
            kind: ErrorKind::TooLong(max),
            value: None,
            detail: String::new(),
        }
    }
}

fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .value
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let with_detail = |f: &mut fmt::Formatter<'_>, head: String| {
            if self.detail.is_empty() {
                write!(f, "{}: {head}", self.path)
            } else {
                write!(f, "{}: {head}: {}", self.path, self.detail)
            }
        };
        match &self.kind {
            ErrorKind::Required => with_detail(f, "Required value".into()),
            ErrorKind::Invalid => with_detail(f, format!("Invalid value: {value}")),
            ErrorKind::Forbidden => with_detail(f, "Forbidden".into()),
            ErrorKind::Duplicate => with_detail(f, format!("Duplicate value: {value}")),
            ErrorKind::NotFound => with_detail(f, format!("Not found: {value}")),
            ErrorKind::TooLong(max) => {
                write!(
                    f,
                    "{}: Too long: may not be more than {max} bytes",
                    self.path
                )
            }
            ErrorKind::NotSupported(supported) => {
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                write!(
                    f,
                    "{}: Unsupported value: {value}: supported values: {}",
                    self.path,
                    list.join(", ")
                )
            }
        }
    }
}

/// Renders the message Kubernetes gives for an invalid object
/// (`apierrors.NewInvalid`): `Kind.group "name" is invalid: <errors>`.
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let list = match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("{kind}.{group} {} is invalid: {list}", quote(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kubernetes() {
        let e = FieldError::not_supported("spec.upgradeStrategy.type", "canary", &["auto", "ota"]);
        assert_eq!(
            e.to_string(),
            r#"spec.upgradeStrategy.type: Unsupported value: "canary": supported values: "auto", "ota""#
        );
        assert_eq!(
            FieldError::required("spec.staticPodManifest", "").to_string(),
            "spec.staticPodManifest: Required value"
        );
        assert_eq!(
            FieldError::invalid("spec.x", 0, "must be >= 1").to_string(),
            r#"spec.x: Invalid value: 0: must be >= 1"#
        );
        assert_eq!(
            invalid_message(
                "StaticPod",
                "apps.openyurt.io",
                "x",
                std::slice::from_ref(&e)
            ),
            r#"StaticPod.apps.openyurt.io "x" is invalid: spec.upgradeStrategy.type: Unsupported value: "canary": supported values: "auto", "ota""#
        );
        let two = invalid_message("StaticPod", "apps.openyurt.io", "x", &[e.clone(), e]);
        assert!(
            two.contains(": [spec.upgradeStrategy.type") && two.ends_with("\"ota\"]"),
            "{two}"
        );
    }
}
