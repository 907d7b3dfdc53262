//! Direct versus proxied: one sequence of requests sent to a development registry directly and,
//! as a caller allowed everything, through registry-proxy to another development registry
//! starting from the same (empty) state. Every answer must be the same status, content type and
//! body, byte for byte: once a request is authorized, the registry decides. The deviations the
//! proxy documents (docs/registry-proxy.md, "Where the proxy answers differently") are checked
//! apart, against the proxy's own answer.

mod support;

use registry_proxy::endpoints::Flavor;
use support::{RawResponse, Stack, raw_request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const STRING: &str = r#"{"schema":"\"string\""}"#;
const LONG: &str = r#"{"schema":"\"long\""}"#;
const RECORD: &str = r#"{"schema":"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}"#;

/// (method, target, body): register, look up, versions, config, mode, compatibility, deletes,
/// trailing slashes, unknown ids and bad bodies, in an order whose answers depend on the state
/// the earlier requests left.
const SEQUENCE: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/", None),
    ("GET", "/subjects", None),
    ("GET", "/schemas/types", None),
    ("POST", "/subjects/diff-value/versions", Some(STRING)),
    ("POST", "/subjects/diff-value/versions/", Some(LONG)),
    (
        "POST",
        "/subjects/diff-value/versions?normalize=true",
        Some(LONG),
    ),
    ("POST", "/subjects/other-value/versions", Some(STRING)),
    ("GET", "/subjects", None),
    ("GET", "/subjects/", None),
    ("GET", "/subjects?subjectPrefix=diff", None),
    ("GET", "/subjects/diff-value/versions", None),
    ("GET", "/subjects/diff-value/versions/", None),
    ("GET", "/subjects/diff-value/versions/1", None),
    ("GET", "/subjects/diff-value/versions/latest", None),
    ("GET", "/subjects/diff-value/versions/latest/", None),
    ("GET", "/subjects/diff-value/versions/2/schema", None),
    ("GET", "/subjects/diff-value/versions/99", None),
    ("GET", "/subjects/diff-value/versions/abc", None),
    ("GET", "/subjects/diff-value/versions/0", None),
    ("GET", "/subjects/no-such/versions", None),
    ("GET", "/subjects/no-such/versions/1", None),
    ("GET", "/subjects/diff-value/metadata", None),
    ("POST", "/subjects/diff-value", Some(STRING)),
    ("POST", "/subjects/diff-value/", Some(LONG)),
    ("POST", "/subjects/diff-value", Some(RECORD)),
    ("POST", "/subjects/no-such", Some(STRING)),
    // Reads by id, known and unknown, numeric or not.
    ("GET", "/schemas", None),
    ("GET", "/schemas/ids/1", None),
    ("GET", "/schemas/ids/1/", None),
    ("GET", "/schemas/ids/1/schema", None),
    ("GET", "/schemas/ids/1/subjects", None),
    ("GET", "/schemas/ids/1/versions", None),
    ("GET", "/schemas/ids/999", None),
    ("GET", "/schemas/ids/999/subjects", None),
    ("GET", "/schemas/ids/999/versions", None),
    ("GET", "/schemas/ids/abc", None),
    ("GET", "/schemas/ids/-1", None),
    // Compatibility.
    (
        "POST",
        "/compatibility/subjects/diff-value/versions/latest",
        Some(LONG),
    ),
    (
        "POST",
        "/compatibility/subjects/diff-value/versions",
        Some(STRING),
    ),
    (
        "POST",
        "/compatibility/subjects/diff-value/versions/77",
        Some(STRING),
    ),
    // Config and mode, global and per subject, with and without a trailing slash.
    ("GET", "/config", None),
    ("PUT", "/config", Some(r#"{"compatibility":"FULL"}"#)),
    ("GET", "/config/", None),
    ("GET", "/config/diff-value", None),
    ("GET", "/config/diff-value?defaultToGlobal=true", None),
    (
        "PUT",
        "/config/diff-value/",
        Some(r#"{"compatibility":"NONE"}"#),
    ),
    ("GET", "/config/diff-value/", None),
    ("DELETE", "/config/diff-value", None),
    ("DELETE", "/config/diff-value", None),
    ("DELETE", "/config", None),
    ("GET", "/mode", None),
    ("PUT", "/mode/diff-value", Some(r#"{"mode":"READONLY"}"#)),
    ("GET", "/mode/diff-value", None),
    ("GET", "/mode/", None),
    ("DELETE", "/mode/diff-value/", None),
    ("GET", "/mode/diff-value", None),
    // Bodies the registry refuses, each in its own words.
    ("POST", "/subjects/diff-value/versions", Some("not json")),
    (
        "POST",
        "/subjects/diff-value/versions",
        Some(r#"{"schema":"\"int\"","foo":1}"#),
    ),
    (
        "POST",
        "/subjects/diff-value/versions",
        Some(r#"{"schemaType":"AVRO"}"#),
    ),
    (
        "POST",
        "/subjects/diff-value/versions",
        Some(r#"{"schema":"{not avro"}"#),
    ),
    ("POST", "/subjects/diff-value/versions", Some("")),
    ("POST", "/subjects/diff-value", Some("[1,2]")),
    ("PUT", "/config/diff-value", Some("nope")),
    ("PUT", "/config/diff-value", Some(r#"{"alias": 7}"#)),
    ("PUT", "/mode/diff-value", Some(r#"{"mode": 1}"#)),
    (
        "POST",
        "/compatibility/subjects/diff-value/versions",
        Some("{"),
    ),
    // References and who refers to what.
    (
        "POST",
        "/subjects/ref-user/versions",
        Some(
            r#"{"schema":"{\"type\":\"record\",\"name\":\"U\",\"fields\":[{\"name\":\"d\",\"type\":\"string\"}]}","references":[{"name":"d","subject":"diff-value","version":1}]}"#,
        ),
    ),
    ("GET", "/subjects/diff-value/versions/1/referencedby", None),
    // Contexts.
    ("POST", "/subjects/:.ctx:diff/versions", Some(STRING)),
    ("GET", "/contexts", None),
    ("GET", "/contexts/.ctx/subjects", None),
    ("GET", "/subjects/:.ctx:diff/versions/1", None),
    ("GET", "/v1/metadata/id", None),
    ("GET", "/v1/metadata/version", None),
    // Deletes, soft then permanent, and what they leave.
    (
        "DELETE",
        "/subjects/diff-value/versions/2?permanent=true",
        None,
    ),
    ("DELETE", "/subjects/diff-value/versions/2", None),
    ("DELETE", "/subjects/diff-value/versions/2/", None),
    (
        "DELETE",
        "/subjects/diff-value/versions/2?permanent=true",
        None,
    ),
    ("DELETE", "/subjects/ref-user", None),
    ("DELETE", "/subjects/ref-user", None),
    ("DELETE", "/subjects/ref-user?permanent=true", None),
    ("DELETE", "/subjects/no-such", None),
    ("GET", "/subjects?deleted=true", None),
    ("GET", "/subjects/diff-value/versions?deleted=true", None),
    ("GET", "/schemas/ids/3/versions?deleted=true", None),
    // Endpoints the registry does not have: the proxy does not forward them, and answers as
    // the registry does.
    ("GET", "/no-such-api", None),
    ("GET", "/subjects/diff-value/versions/1/extra", None),
    (
        "GET",
        "/associations/resources/-/diff?resourceType=topic&associationType=value",
        None,
    ),
];

/// What the proxy answers differently, on purpose: (method, target, status the proxy answers).
const DEVIATIONS: &[(&str, &str, u16)] = &[
    // Paths two parsers could read differently are refused (400), never normalized.
    ("GET", "//subjects", 400),
    ("GET", "/subjects/diff-value//versions", 400),
    ("GET", "/subjects/diff-value/versions//", 400),
    ("GET", "/subjects/diff-value/./versions", 400),
    ("GET", "/subjects/diff-value%2Fversions", 400),
    // HEAD is not in the endpoint map: 405 rather than the GET's headers.
    ("HEAD", "/subjects", 405),
];

struct Compared {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl From<RawResponse> for Compared {
    fn from(r: RawResponse) -> Self {
        Self {
            status: r.status,
            content_type: r.header("content-type"),
            body: r.body,
        }
    }
}

#[tokio::test]
async fn answers_through_the_proxy_are_the_registrys_own() {
    let stack = Stack::start(Flavor::Confluent).await;
    let superuser = format!("Bearer {}", stack.idp.token("sam", &["superusers"]));
    let shutdown = CancellationToken::new();
    let direct_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let direct = format!("http://{}", direct_listener.local_addr().unwrap());
    tokio::spawn(dev_registry::run(
        direct_listener,
        shutdown.clone().cancelled_owned(),
    ));
    let _stop = shutdown.drop_guard();

    let auth = [("Authorization", superuser.as_str())];
    for (method, target, body) in SEQUENCE {
        let want: Compared = raw_request(&direct, method, target, &[], *body)
            .await
            .into();
        let got = raw_request(&stack.proxy, method, target, &auth, *body).await;
        assert!(
            got.header("x-request-id").is_some(),
            "{method} {target}: the proxy answered"
        );
        let got: Compared = got.into();
        assert_eq!(
            (got.status, &got.body),
            (want.status, &want.body),
            "{method} {target}: proxied differs from direct"
        );
        assert_eq!(
            got.content_type, want.content_type,
            "{method} {target}: content type"
        );
    }
    // Every request above was decided and audited; none was refused by the proxy except the
    // endpoints no registry has, which were not forwarded.
    let records = stack.audit();
    for r in &records {
        let unknown = r["reason"]
            .as_str()
            .is_some_and(|why| why.starts_with("unknown endpoint"));
        if unknown {
            assert_eq!(
                (r["decision"].as_str(), r["upstream_status"].is_null()),
                (Some("refused"), true),
                "{r}"
            );
        } else {
            assert_eq!(r["decision"], "permit", "{r}");
        }
    }

    for (method, target, status) in DEVIATIONS {
        let got = raw_request(&stack.proxy, method, target, &auth, None).await;
        assert_eq!(got.status, *status, "{method} {target}: {}", got.body);
    }
}
