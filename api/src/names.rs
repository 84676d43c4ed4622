//! Kubernetes name syntax (`k8s.io/apimachinery/pkg/util/validation`), returning the
//! same explanations Kubernetes gives.

/// Longest DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Problems with `value` as a DNS-1123 label (container, port and volume names).
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let ok = !value.is_empty()
        && value.chars().all(|c| is_alnum(c) || c == '-')
        && value.starts_with(is_alnum)
        && value.ends_with(is_alnum);
    if !ok {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')"
                .into(),
        );
    }
    errs
}

/// Problems with `value` as a DNS-1123 subdomain of at most `max` characters.
pub fn dns1123_subdomain(value: &str, max: usize) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > max {
        errs.push(format!("must be no more than {max} characters"));
    }
    let ok = !value.is_empty()
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| is_alnum(c) || c == '-')
                && label.starts_with(is_alnum)
                && label.ends_with(is_alnum)
        });
    if !ok {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com')"
                .into(),
        );
    }
    errs
}

/// Problems with `value` as an IANA service name (named container ports).
pub fn iana_svc_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 15 {
        errs.push("must be no more than 15 characters".into());
    }
    if !value.chars().all(|c| is_alnum(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if value.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !value.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// Problems with `value` as a label or annotation key (`[prefix/]name`).
pub fn qualified_name(value: &str) -> Vec<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let mut errs = Vec::new();
    if let Some(prefix) = prefix {
        for e in dns1123_subdomain(prefix, DNS1123_SUBDOMAIN_MAX) {
            errs.push(format!("prefix part {e}"));
        }
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    if !ok {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc'), with at most 63 characters"
                .into(),
        );
    }
    errs
}

/// Problems with `value` as a label value.
pub fn label_value(value: &str) -> Vec<String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && value.starts_with(alnum)
            && value.ends_with(alnum));
    if ok {
        Vec::new()
    } else {
        vec![
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character, with at most 63 \
             characters"
                .into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("nginx-1").is_empty());
        assert!(!dns1123_label("Nginx").is_empty());
        assert!(!dns1123_label("-a").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(dns1123_subdomain("kube-proxy.v2", 253).is_empty());
        assert!(!dns1123_subdomain("a..b", 253).is_empty());
        assert!(!dns1123_subdomain(".a", 253).is_empty());
        assert!(!dns1123_subdomain("", 253).is_empty());
    }

    #[test]
    fn service_names_and_qualified_names() {
        assert!(iana_svc_name("http").is_empty());
        assert!(!iana_svc_name("8080").is_empty());
        assert!(!iana_svc_name("a--b").is_empty());
        assert!(!iana_svc_name("a-very-long-port-name").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("bad key").is_empty());
        assert!(label_value("").is_empty());
        assert!(!label_value("-x").is_empty());
    }
}
