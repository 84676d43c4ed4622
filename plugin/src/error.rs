//! Errors a person understands, and the exit codes scripts rely on.

/// Exit codes (documented in `status --help` and the README).
pub mod exit {
    /// Done; for `--wait`, the rollout is complete.
    pub const OK: u8 = 0;
    /// An error: cluster unreachable, object or CRD missing, forbidden, a refused
    /// upgrade.
    pub const ERROR: u8 = 1;
    /// Bad command-line usage (clap's code).
    pub const USAGE: u8 = 2;
    /// `--wait`: the rollout failed on a node (rolled back there).
    pub const ROLLOUT_FAILED: u8 = 3;
    /// `--wait`: the timeout passed before the rollout completed.
    pub const TIMEOUT: u8 = 4;
}

/// Everything that ends the plugin early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig cannot be read or has no such context.
    #[error("{0}")]
    Kubeconfig(String),
    /// The API server did not answer.
    #[error(
        "cannot reach the Kubernetes API server at {url}: {cause}\n\
         Check that the cluster is running and that --kubeconfig/--context (or KUBECONFIG) point at it."
    )]
    Unreachable {
        /// The server URL from the kubeconfig.
        url: String,
        /// What the connection said.
        cause: String,
    },
    /// The StaticPod CRD is not installed.
    #[error(
        "the StaticPod API (staticpods.apps.openyurt.io) is not installed in this cluster.\n\
         Install it with `kubectl apply -f manifests/crd.yaml` (the CRD only) or \
         `kubectl apply -k manifests/` (the whole operator)."
    )]
    CrdMissing,
    /// No StaticPod of that name.
    #[error("{}", not_found_message(.name, .namespace, .suggestions, .elsewhere))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The namespace looked in.
        namespace: String,
        /// Close names in that namespace.
        suggestions: Vec<String>,
        /// Namespaces that have a StaticPod of exactly that name.
        elsewhere: Vec<String>,
    },
    /// RBAC said no.
    #[error(
        "forbidden: you may not {verb} {resource}{} ({message}).\n\
         Ask a cluster admin for a Role granting \"{verb}\" on \"{resource}\"{}.",
        scope(.namespace), scope(.namespace)
    )]
    Forbidden {
        /// The verb attempted.
        verb: String,
        /// The resource, `group/resource` style.
        resource: String,
        /// The namespace, for namespaced requests.
        namespace: Option<String>,
        /// The API server's words.
        message: String,
    },
    /// Any other answer from the API server.
    #[error("{verb} {resource}{} failed: {message}", scope(.namespace))]
    Api {
        /// The verb attempted.
        verb: String,
        /// The resource.
        resource: String,
        /// The namespace, for namespaced requests.
        namespace: Option<String>,
        /// The API server's words.
        message: String,
    },
    /// `--wait`: the rollout failed.
    #[error("{0}")]
    RolloutFailed(String),
    /// `--wait`: out of time.
    #[error("{0}")]
    Timeout(String),
    /// `upgrade`: at least one node was not upgradable (each already reported).
    #[error("{0}")]
    Refused(String),
    /// Anything else (I/O on stdout, a watch that ended).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::RolloutFailed(_) => exit::ROLLOUT_FAILED,
            Self::Timeout(_) => exit::TIMEOUT,
            _ => exit::ERROR,
        }
    }
}

fn scope(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

fn not_found_message(
    name: &str,
    namespace: &str,
    suggestions: &[String],
    elsewhere: &[String],
) -> String {
    let mut text = format!("staticpod {name:?} not found in namespace {namespace}");
    if !suggestions.is_empty() {
        let names: Vec<String> = suggestions.iter().map(|s| format!("{s:?}")).collect();
        text.push_str(&format!("; did you mean {}?", names.join(" or ")));
    }
    if !elsewhere.is_empty() {
        text.push_str(&format!(
            "\nA staticpod {name:?} exists in namespace {}: add -n {}.",
            elsewhere.join(", "),
            elsewhere[0]
        ));
    }
    if suggestions.is_empty() && elsewhere.is_empty() {
        text.push_str("; `kubectl staticpod status` lists the StaticPods here (-A: everywhere)");
    }
    text
}

/// What a request was doing, so an error can say so.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `get`, `list`, `watch`, `patch`.
    pub verb: &'a str,
    /// `staticpods.apps.openyurt.io`, `pods`, `nodes`, `configmaps`.
    pub resource: &'a str,
    /// The namespace, for namespaced requests.
    pub namespace: Option<&'a str>,
    /// The server URL, for connection errors.
    pub url: &'a str,
}

impl Request<'_> {
    /// Turns an API status (code, reason, message) into an error a person can act on.
    pub fn status(&self, code: u16, message: &str) -> Error {
        let (verb, resource, namespace) = (
            self.verb.to_owned(),
            self.resource.to_owned(),
            self.namespace.map(str::to_owned),
        );
        match code {
            403 => Error::Forbidden {
                verb,
                resource,
                namespace,
                message: message.to_owned(),
            },
            // Only the StaticPod type can be missing from a cluster (callers turn a
            // missing StaticPod object into NotFound themselves).
            404 if self.resource.contains("staticpods") && self.verb != "get" => Error::CrdMissing,
            401 => Error::Kubeconfig(format!(
                "the API server at {} rejected your credentials ({message}); \
                 log in again or pick another --context",
                self.url
            )),
            _ => Error::Api {
                verb,
                resource,
                namespace,
                message: message.to_owned(),
            },
        }
    }

    /// Turns a client error into an error a person can act on.
    pub fn error(&self, error: kube::Error) -> Error {
        match error {
            kube::Error::Api(status) => self.status(status.code, &status.message),
            kube::Error::HyperError(e) => self.unreachable(&e),
            kube::Error::Service(e) => self.unreachable(e.as_ref()),
            other => Error::Api {
                verb: self.verb.to_owned(),
                resource: self.resource.to_owned(),
                namespace: self.namespace.map(str::to_owned),
                message: other.to_string(),
            },
        }
    }

    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> Error {
        // The innermost cause is what a person recognises ("Connection refused").
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Error::Unreachable {
            url: self.url.to_owned(),
            cause: cause.to_string(),
        }
    }
}

/// Names close to `wanted` among `names`, closest first (typos, prefixes).
pub fn close_names(wanted: &str, names: &[String]) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = names
        .iter()
        .map(|n| (strsim::jaro_winkler(wanted, n), n))
        .filter(|(score, n)| *score >= 0.8 || n.contains(wanted) || wanted.contains(n.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
}
