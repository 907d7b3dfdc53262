//! registry-proxy in process, against the development registry and a locally generated JWKS.
//!
//! - `endpoint_table`: every endpoint of the map, with a principal it permits and one it refuses.
//! - `bypass`: crafted requests that try to get around canonicalization, authentication or
//!   authorization; each is refused or decided exactly as its canonical form.
//! - `behaviour`: list filtering, reads by id, the cache, key rotation, audit records, metrics.
//! - `upstream_answers`: what real registries answer that the development registry does not
//!   (Confluent's context fallback, Apicurio's group-blind id lookups, 5xx bodies), from a
//!   scripted upstream.

mod support;

use registry_proxy::endpoints::Flavor;
use serde_json::{Value, json};
use support::Stack;

const SCHEMA: &str = r#"{"schema":"\"string\""}"#;

struct Tokens {
    owner: String,
    admin: String,
    outsider: String,
}

impl Tokens {
    fn new(stack: &Stack) -> Self {
        Self {
            owner: stack.idp.token("olivia", &["owners"]),
            admin: stack.idp.token("adam", &["admins"]),
            outsider: stack.idp.token("otto", &[]),
        }
    }

    fn get(&self, who: &str) -> &str {
        match who {
            "owner" => &self.owner,
            "admin" => &self.admin,
            "outsider" => &self.outsider,
            other => panic!("unknown principal {other}"),
        }
    }
}

/// Registers the subjects the tables rely on: `payments-value` and `orders-value` share id 1;
/// id 4 is used by `orders-secret` only.
async fn seed(stack: &Stack, tokens: &Tokens) {
    let (s, b) = stack
        .call(
            "POST",
            "/subjects/payments-value/versions",
            &tokens.owner,
            Some(SCHEMA),
        )
        .await;
    assert_eq!((s, &b["id"]), (200, &json!(1)), "{b}");
    let (s, b) = stack
        .call(
            "POST",
            "/subjects/:.ctx:payments-value/versions",
            &tokens.owner,
            Some(r#"{"schema":"\"int\""}"#),
        )
        .await;
    assert_eq!((s, &b["id"]), (200, &json!(2)), "{b}");
    let (s, b) = stack
        .call(
            "POST",
            "/subjects/payments-tmp/versions",
            &tokens.owner,
            Some(r#"{"schema":"\"long\""}"#),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for (subject, schema) in [
        ("orders-value", SCHEMA),
        ("orders-secret", r#"{"schema":"\"double\""}"#),
    ] {
        let direct = stack
            .http
            .post(format!("{}/subjects/{subject}/versions", stack.registry))
            .header("content-type", "application/json")
            .body(schema)
            .send()
            .await
            .unwrap();
        assert!(direct.status().is_success());
    }
}

/// Sends one request and returns its status, body and (only) audit record.
async fn exchange(
    stack: &Stack,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value, Value) {
    let (status, body, request_id) = stack.raw_with_id(method, target, headers, body).await;
    let request_id =
        request_id.unwrap_or_else(|| panic!("{method} {target}: no x-request-id ({status})"));
    stack.audit_of(&request_id).await;
    // Give a stray second record the chance to show up before counting.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let records: Vec<Value> = stack
        .audit()
        .into_iter()
        .filter(|r| r["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(
        records.len(),
        1,
        "{method} {target}: exactly one audit record per request"
    );
    assert_eq!(records[0]["status"], status, "{method} {target}");
    (status, body, records[0].clone())
}

async fn as_principal(
    stack: &Stack,
    token: &str,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    exchange(stack, method, target, &headers, body).await
}

type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    &'static str,
);

async fn run_table(stack: &Stack, tokens: &Tokens, rows: &[Row]) {
    for (method, target, body, headers, op, allowed, refused) in rows {
        let (status, resp, record) =
            as_principal(stack, tokens.get(refused), method, target, headers, *body).await;
        assert_eq!(status, 403, "{refused} {method} {target}: {resp}");
        assert_eq!(resp["error_code"], 40301, "{method} {target}: {resp}");
        assert!(
            resp["message"]
                .as_str()
                .unwrap()
                .contains("denied operation"),
            "{resp}"
        );
        assert_eq!(
            (record["decision"].as_str(), record["operation"].as_str()),
            (Some("deny"), Some(*op)),
            "{method} {target}: {record}"
        );
        assert!(
            record["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("no rule grants")),
            "{record}"
        );

        let (status, resp, record) =
            as_principal(stack, tokens.get(allowed), method, target, headers, *body).await;
        assert!(
            ![400, 401, 403].contains(&status),
            "{allowed} {method} {target}: {status} {resp}"
        );
        assert_eq!(
            (record["decision"].as_str(), record["operation"].as_str()),
            (Some("permit"), Some(*op)),
            "{method} {target}: {record}"
        );
        assert!(
            record["rule_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{record}"
        );
        assert_eq!(record["upstream_status"], json!(status), "{record}");
    }
}

mod endpoint_table {
    use super::*;

    const NONE: &[(&str, &str)] = &[];
    const GRP: &[(&str, &str)] = &[("X-Registry-GroupId", "grp")];

    #[tokio::test]
    async fn every_confluent_endpoint_permits_and_refuses() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        let rows: &[Row] = &[
            ("GET", "/", None, NONE, "global_read", "admin", "owner"),
            (
                "GET",
                "/schemas/types",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/schemas/ids/1",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/schemas/ids/1/schema",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/schemas/ids/1/subjects",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/schemas/ids/1/versions",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/schemas/ids/2?subject=:.ctx:payments-value",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "POST",
                "/subjects/payments-value",
                Some(SCHEMA),
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/subjects/payments-value/versions",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "POST",
                "/subjects/payments-value/versions",
                Some(SCHEMA),
                NONE,
                "write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/subjects/payments-value/versions/1",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/subjects/payments-value/versions/latest/schema",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/subjects/payments-value/versions/1/referencedby",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/subjects/payments-value/metadata",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "POST",
                "/compatibility/subjects/payments-value/versions",
                Some(SCHEMA),
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "POST",
                "/compatibility/subjects/payments-value/versions/latest",
                Some(SCHEMA),
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/config",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "PUT",
                "/config",
                Some(r#"{"compatibility":"BACKWARD"}"#),
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "DELETE",
                "/config",
                None,
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "PUT",
                "/config/payments-value",
                Some(r#"{"compatibility":"FULL"}"#),
                NONE,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/config/payments-value",
                None,
                NONE,
                "compat_read",
                "owner",
                "admin",
            ),
            (
                "DELETE",
                "/config/payments-value",
                None,
                NONE,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "PUT",
                "/config/:.ctx:",
                Some(r#"{"compatibility":"NONE"}"#),
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            ("GET", "/mode", None, NONE, "global_read", "admin", "owner"),
            (
                "PUT",
                "/mode",
                Some(r#"{"mode":"READWRITE"}"#),
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "DELETE",
                "/mode",
                None,
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "PUT",
                "/mode/payments-value",
                Some(r#"{"mode":"READWRITE"}"#),
                NONE,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/mode/payments-value",
                None,
                NONE,
                "compat_read",
                "owner",
                "admin",
            ),
            (
                "DELETE",
                "/mode/payments-value",
                None,
                NONE,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/contexts",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "DELETE",
                "/contexts/.old",
                None,
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/v1/metadata/id",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/v1/metadata/version",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/contexts/.ctx/subjects/payments-value/versions",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/subjects/:.ctx:payments-value/versions/1",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "DELETE",
                "/subjects/payments-tmp/versions/1",
                None,
                NONE,
                "delete",
                "owner",
                "admin",
            ),
            (
                "DELETE",
                "/subjects/payments-tmp",
                None,
                NONE,
                "delete",
                "owner",
                "admin",
            ),
            (
                "DELETE",
                "/subjects/payments-tmp?permanent=true",
                None,
                NONE,
                "delete",
                "owner",
                "admin",
            ),
        ];
        run_table(&stack, &tokens, rows).await;
    }

    #[tokio::test]
    async fn every_apicurio_endpoint_permits_and_refuses() {
        let stack = Stack::start(Flavor::Apicurio).await;
        let tokens = Tokens::new(&stack);
        let rows: &[Row] = &[
            (
                "POST",
                "/apis/ccompat/v7/subjects/payments-x/versions",
                Some(SCHEMA),
                GRP,
                "write",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/apis/ccompat/v8/subjects/payments-x/versions",
                None,
                GRP,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/apis/ccompat/v7/subjects/payments-x/versions/1",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "PUT",
                "/apis/ccompat/v7/config/payments-x",
                Some(r#"{"compatibility":"FULL"}"#),
                GRP,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/apis/ccompat/v7/config",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/apis/registry/v3/groups/grp/artifacts/payments-x",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "PUT",
                "/apis/registry/v3/groups/grp/artifacts/payments-x",
                Some("{}"),
                NONE,
                "write",
                "owner",
                "admin",
            ),
            (
                "DELETE",
                "/apis/registry/v3/groups/grp/artifacts/payments-x",
                None,
                NONE,
                "delete",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/versions",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "POST",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/versions",
                Some("{}"),
                NONE,
                "write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/versions/1/content",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "DELETE",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/versions/1",
                None,
                NONE,
                "delete",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/rules",
                None,
                NONE,
                "compat_read",
                "owner",
                "admin",
            ),
            (
                "PUT",
                "/apis/registry/v3/groups/grp/artifacts/payments-x/rules/COMPATIBILITY",
                Some("{}"),
                NONE,
                "compat_write",
                "owner",
                "admin",
            ),
            (
                "POST",
                "/apis/registry/v3/groups/grp/artifacts",
                Some(r#"{"artifactId":"payments-y"}"#),
                NONE,
                "write",
                "owner",
                "admin",
            ),
            (
                "POST",
                "/apis/registry/v2/groups/grp/artifacts",
                Some("{}"),
                &[("X-Registry-ArtifactId", "payments-y")],
                "write",
                "owner",
                "admin",
            ),
            (
                "GET",
                "/apis/registry/v2/groups/default/artifacts/payments-y/meta",
                None,
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "PUT",
                "/apis/registry/v2/groups/grp/artifacts/payments-y/test",
                Some("{}"),
                NONE,
                "read",
                "owner",
                "outsider",
            ),
            (
                "GET",
                "/apis/registry/v3/groups",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "DELETE",
                "/apis/registry/v3/groups/grp",
                None,
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/apis/registry/v3/ids/globalIds/1",
                None,
                NONE,
                "read",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/apis/registry/v3/admin/export",
                None,
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
            (
                "GET",
                "/apis/registry/v3/system/info",
                None,
                NONE,
                "global_read",
                "admin",
                "owner",
            ),
            (
                "PUT",
                "/apis/registry/v3/admin/rules/COMPATIBILITY",
                Some("{}"),
                NONE,
                "global_write",
                "admin",
                "owner",
            ),
        ];
        run_table(&stack, &tokens, rows).await;
    }
}

mod bypass {
    use super::*;
    use jsonwebtoken::Algorithm;
    use support::{EC_KID, RSA_KID, alg_none, now};

    /// What a crafted request must come to.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        /// 400, `refused`.
        Refused,
        /// 401, `unauthenticated`.
        Unauthenticated,
        /// 403, `deny`.
        Denied,
        /// 404 in the registry's shape, `refused`: not in the endpoint map, never forwarded.
        NotFound,
        /// 405 in the registry's shape, `refused`: a known path with another method.
        MethodNotAllowed,
        /// The same status and decision as this canonical request.
        SameAs(&'static str, &'static str),
    }

    /// (name, method, target, headers, body, expectation)
    type Case<'a> = (
        String,
        &'a str,
        String,
        Vec<(String, String)>,
        Option<&'a str>,
        Expect,
    );

    #[tokio::test]
    async fn crafted_requests_are_refused_or_decided_canonically() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        let idp = &stack.idp;
        let owner = tokens.owner.clone();
        let outsider = tokens.outsider.clone();
        let claims = idp.claims("olivia", &["owners"]);
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims.clone();
            edit(&mut c);
            c
        };
        let tampered = {
            let other = idp.token("olivia", &["admins"]);
            let parts: Vec<&str> = owner.split('.').collect();
            let other_parts: Vec<&str> = other.split('.').collect();
            format!("{}.{}.{}", parts[0], other_parts[1], parts[2])
        };
        let token_cases: Vec<(&str, String)> = vec![
            ("alg none", alg_none(&claims)),
            (
                "HS256 signed with the RSA public key",
                idp.hs256_with_public_key(&claims),
            ),
            (
                "expired",
                idp.sign(
                    &with(&|c| c["exp"] = json!(now() - 3600)),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "not yet valid",
                idp.sign(
                    &with(&|c| c["nbf"] = json!(now() + 3600)),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "issued in the future",
                idp.sign(
                    &with(&|c| c["iat"] = json!(now() + 3600)),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "wrong audience",
                idp.sign(
                    &with(&|c| c["aud"] = json!("someone-else")),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "wrong issuer",
                idp.sign(
                    &with(&|c| c["iss"] = json!("http://evil.example")),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "unknown kid",
                idp.sign(&claims, Algorithm::RS256, Some("no-such-key")),
            ),
            (
                "missing sub",
                idp.sign(
                    &with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "empty sub",
                idp.sign(
                    &with(&|c| c["sub"] = json!("")),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "missing exp",
                idp.sign(
                    &with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            (
                "missing aud",
                idp.sign(
                    &with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
                    Algorithm::RS256,
                    Some(RSA_KID),
                ),
            ),
            ("tampered payload", tampered),
            (
                "RSA key with an EC algorithm",
                support::with_alg(&owner, "ES256"),
            ),
            (
                "EC key claimed as RS256",
                support::with_alg(&idp.sign(&claims, Algorithm::ES256, Some(EC_KID)), "RS256"),
            ),
            (
                "PS256 header on an RS256 signature",
                support::with_alg(&owner, "PS256"),
            ),
            (
                "no kid with several keys",
                idp.sign(&claims, Algorithm::RS256, None),
            ),
            ("garbage", "not.a.jwt".into()),
        ];

        let target = "/subjects/payments-value/versions";
        let mut cases: Vec<Case<'_>> = Vec::new();
        let bearer = |t: &str| vec![("Authorization".to_owned(), format!("Bearer {t}"))];
        for (name, token) in &token_cases {
            cases.push((
                format!("token: {name}"),
                "GET",
                target.into(),
                bearer(token),
                None,
                Expect::Unauthenticated,
            ));
        }
        cases.push((
            "no Authorization header".into(),
            "GET",
            target.into(),
            vec![],
            None,
            Expect::Unauthenticated,
        ));
        cases.push((
            "Basic credentials".into(),
            "GET",
            target.into(),
            vec![("Authorization".into(), "Basic b2xpdmlhOnB3".into())],
            None,
            Expect::Unauthenticated,
        ));
        cases.push((
            "empty bearer".into(),
            "GET",
            target.into(),
            vec![("Authorization".into(), "Bearer ".into())],
            None,
            Expect::Unauthenticated,
        ));

        let o = |path: &str, expect: Expect| {
            (
                path.to_owned(),
                "GET",
                path.to_owned(),
                bearer(&owner),
                None::<&str>,
                expect,
            )
        };
        for (path, expect) in [
            ("/subjects/../config", Expect::Refused),
            ("/subjects/%2e%2e/config", Expect::Refused),
            (
                "/subjects/payments-value/versions/../../../config",
                Expect::Refused,
            ),
            (
                "/subjects/payments-value%2F..%2F..%2Fconfig/versions",
                Expect::Refused,
            ),
            ("//subjects/payments-value/versions", Expect::Refused),
            ("/subjects//versions", Expect::Refused),
            (
                "/subjects/payments-value/versions/",
                Expect::SameAs("GET", "/subjects/payments-value/versions"),
            ),
            (
                "/config/payments-value/",
                Expect::SameAs("GET", "/config/payments-value"),
            ),
            ("/subjects/orders-value/versions/", Expect::Denied),
            ("/subjects/payments-value/versions//", Expect::Refused),
            ("/subjects/payments-value//versions/", Expect::Refused),
            ("/subjects/payments-value/versions/./", Expect::Refused),
            ("/subjects/payments-value/./versions", Expect::Refused),
            ("/subjects/payments-value%252Fversions", Expect::Refused),
            ("/subjects/payments-value%2Fversions", Expect::Refused),
            ("/subjects/payments-value%2fversions/1", Expect::Refused),
            ("/subjects/payments-value;x=1/versions", Expect::Refused),
            ("/subjects/payments-value%3Bx/versions", Expect::Refused),
            (
                "/subjects/payments-value%5C..%5Cconfig/versions",
                Expect::Refused,
            ),
            ("/subjects/payments-value%00/versions", Expect::Refused),
            ("/subjects/payments-value%zz/versions", Expect::Refused),
            ("/subjects/%C3%28/versions", Expect::Refused),
            (
                "/subjects/payments%2Dvalue/versions",
                Expect::SameAs("GET", "/subjects/payments-value/versions"),
            ),
            (
                "/subjects/%70ayments-value/versions",
                Expect::SameAs("GET", "/subjects/payments-value/versions"),
            ),
            (
                "/subjects/:.:payments-value/versions",
                Expect::SameAs("GET", "/subjects/payments-value/versions"),
            ),
            (
                "/subjects/%3A.%3Apayments-value/versions",
                Expect::SameAs("GET", "/subjects/payments-value/versions"),
            ),
            ("/subjects/orders-value/versions", Expect::Denied),
            ("/subjects/payments+value/versions", Expect::Denied),
            ("/subjects/:.other:payments-value/versions", Expect::Denied),
            (
                "/subjects/%3A.other%3Apayments-value/versions",
                Expect::Denied,
            ),
            (
                "/contexts/.other/subjects/payments-value/versions",
                Expect::Denied,
            ),
            (
                "/contexts/.ctx/subjects/:.other:payments-value/versions",
                Expect::Refused,
            ),
            (
                "/contexts/other/subjects/payments-value/versions",
                Expect::Refused,
            ),
            ("/subjects/:other:payments-value/versions", Expect::Refused),
            ("/subjects/:.ctx:/versions", Expect::Refused),
            ("/schemas/ids/4", Expect::Denied),
            (
                "/schemas/ids/1?subject=payments-value&subject=orders-value",
                Expect::Refused,
            ),
            (
                "/subjects?subjectPrefix=payments&subjectPrefix=orders",
                Expect::Refused,
            ),
            ("/subjects?deleted=true&deleted=false", Expect::Refused),
            ("/subjects?Deleted=true", Expect::Refused),
            ("/exporters", Expect::Denied),
            ("/dek-registry/v1/keks", Expect::Denied),
            ("/dek-registry/v1/keks/k/deks/orders-value", Expect::Denied),
            ("/associations/subjects/orders-value", Expect::Denied),
            ("/no-such-api", Expect::NotFound),
            (
                "/subjects/payments-value/versions/1/extra",
                Expect::NotFound,
            ),
            ("/contexts/.ctx/exporters", Expect::NotFound),
        ] {
            cases.push(o(path, expect));
        }
        let h = |k: &str, v: &str, t: &str| {
            let mut hs = bearer(t);
            hs.push((k.to_owned(), v.to_owned()));
            hs
        };
        cases.push((
            "DELETE with duplicated permanent".into(),
            "DELETE",
            "/subjects/payments-value?permanent=false&permanent=true".into(),
            bearer(&owner),
            None,
            Expect::Refused,
        ));
        cases.push((
            "lookup whose subject holds an encoded '/' (a register to Karapace)".into(),
            "POST",
            "/subjects/payments-value%2Fversions".into(),
            bearer(&owner),
            Some(SCHEMA),
            Expect::Refused,
        ));
        cases.push((
            "DELETE with Permanent".into(),
            "DELETE",
            "/subjects/payments-value?Permanent=true".into(),
            bearer(&owner),
            None,
            Expect::Refused,
        ));
        cases.push((
            "PUT /mode with duplicated force".into(),
            "PUT",
            "/mode?force=true&force=false".into(),
            bearer(&tokens.admin),
            Some(r#"{"mode":"READWRITE"}"#),
            Expect::Refused,
        ));
        cases.push((
            "X-HTTP-Method-Override".into(),
            "GET",
            target.into(),
            h("X-HTTP-Method-Override", "DELETE", &owner),
            None,
            Expect::Refused,
        ));
        cases.push((
            "X-HTTP-Method".into(),
            "POST",
            "/subjects/payments-value".into(),
            h("X-HTTP-Method", "DELETE", &owner),
            Some(SCHEMA),
            Expect::Refused,
        ));
        cases.push((
            "X-Method-Override".into(),
            "GET",
            target.into(),
            h("X-Method-Override", "PUT", &owner),
            None,
            Expect::Refused,
        ));
        cases.push((
            "forged X-Forwarded-User".into(),
            "PUT",
            "/config".into(),
            h("X-Forwarded-User", "adam", &outsider),
            Some(r#"{"compatibility":"NONE"}"#),
            Expect::Denied,
        ));
        cases.push((
            "forged X-Forwarded-Groups".into(),
            "GET",
            "/subjects/orders-value/versions".into(),
            h("X-Forwarded-Groups", "admins", &outsider),
            None,
            Expect::Denied,
        ));
        cases.push((
            "forged X-Forwarded-User, no token".into(),
            "GET",
            target.into(),
            vec![("X-Forwarded-User".into(), "olivia".into())],
            None,
            Expect::Unauthenticated,
        ));
        cases.push((
            "PATCH".into(),
            "PATCH",
            target.into(),
            bearer(&owner),
            Some(SCHEMA),
            Expect::MethodNotAllowed,
        ));
        cases.push((
            "HEAD".into(),
            "HEAD",
            "/subjects".into(),
            bearer(&owner),
            None,
            Expect::MethodNotAllowed,
        ));
        cases.push((
            "POST to a GET-only path".into(),
            "POST",
            "/schemas/ids/1".into(),
            bearer(&owner),
            Some(SCHEMA),
            Expect::MethodNotAllowed,
        ));
        cases.push((
            "unknown endpoint without a token".into(),
            "GET",
            "/no-such-api".into(),
            vec![],
            None,
            Expect::Unauthenticated,
        ));
        cases.push((
            "alias to a foreign subject".into(),
            "PUT",
            "/config/payments-value".into(),
            bearer(&owner),
            Some(r#"{"alias":"orders-value"}"#),
            Expect::Denied,
        ));
        cases.push((
            "alias given twice (read either way by different parsers)".into(),
            "PUT",
            "/config/payments-value".into(),
            bearer(&owner),
            Some(r#"{"alias":"payments-x","alias":"orders-value"}"#),
            Expect::Denied,
        ));
        cases.push((
            "references given twice".into(),
            "POST",
            target.into(),
            bearer(&owner),
            Some(r#"{"schema":"\"string\"","references":[],"references":[{"name":"o","subject":"orders-value","version":1}]}"#),
            Expect::Denied,
        ));
        cases.push((
            "references that are not JSON the proxy reads".into(),
            "POST",
            target.into(),
            bearer(&owner),
            Some(r#"{"schema":"\"string\"","references":[{"name":"o","subject":"orders-value","version":1}]} trailing"#),
            Expect::Denied,
        ));
        cases.push((
            "a DEK for a foreign subject".into(),
            "POST",
            "/dek-registry/v1/keks/k/deks".into(),
            bearer(&owner),
            Some(r#"{"subject":"orders-value","algorithm":"AES256_GCM"}"#),
            Expect::Denied,
        ));
        cases.push((
            "an association to a foreign subject".into(),
            "POST",
            "/associations".into(),
            bearer(&owner),
            Some(r#"{"resourceName":"orders","resourceNamespace":"-","resourceType":"topic","associations":[{"subject":"orders-value","associationType":"value"}]}"#),
            Expect::Denied,
        ));
        cases.push((
            "an association whose subject the registry would choose".into(),
            "POST",
            "/associations".into(),
            bearer(&owner),
            Some(r#"{"resourceName":"payments","resourceNamespace":"-","associations":[{"associationType":"value","lifecycle":"STRONG"}]}"#),
            Expect::Denied,
        ));
        cases.push(("reference to a foreign subject".into(), "POST", target.into(), bearer(&owner), Some(r#"{"schema":"\"string\"","references":[{"name":"o","subject":"orders-value","version":1}]}"#), Expect::Denied));
        cases.push(("reference into another context".into(), "POST", target.into(), bearer(&owner), Some(r#"{"schema":"\"string\"","references":[{"name":"o","subject":":.other:payments-value","version":1}]}"#), Expect::Denied));

        assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
        for (name, method, path, headers, body, expect) in &cases {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (status, resp, record) = exchange(&stack, method, path, &headers, *body).await;
            let decision = record["decision"].as_str().unwrap_or_default().to_owned();
            match expect {
                Expect::Refused => assert_eq!(
                    (status, decision.as_str()),
                    (400, "refused"),
                    "{name}: {resp}"
                ),
                Expect::Unauthenticated => {
                    assert_eq!(
                        (status, decision.as_str()),
                        (401, "unauthenticated"),
                        "{name}: {resp}"
                    );
                    assert_eq!(resp["error_code"], 40101, "{name}");
                }
                Expect::Denied => {
                    assert_eq!((status, decision.as_str()), (403, "deny"), "{name}: {resp}")
                }
                Expect::NotFound => {
                    assert_eq!(
                        (status, decision.as_str(), &resp),
                        (
                            404,
                            "refused",
                            &json!({"error_code": 404, "message": "HTTP 404 Not Found"})
                        ),
                        "{name}"
                    );
                    assert_eq!(
                        record["upstream_status"],
                        Value::Null,
                        "{name}: not forwarded"
                    );
                }
                Expect::MethodNotAllowed => {
                    assert_eq!((status, decision.as_str()), (405, "refused"), "{name}");
                    assert_eq!(
                        record["upstream_status"],
                        Value::Null,
                        "{name}: not forwarded"
                    );
                }
                Expect::SameAs(m, canonical) => {
                    let (c_status, _, c_record) =
                        exchange(&stack, m, canonical, &headers, *body).await;
                    assert_eq!(
                        (status, decision.as_str()),
                        (c_status, c_record["decision"].as_str().unwrap()),
                        "{name}"
                    );
                    assert_eq!(
                        record["path"], c_record["path"],
                        "{name}: canonical paths differ"
                    );
                    assert_eq!(record["subjects"], c_record["subjects"], "{name}");
                }
            }
            if status >= 400 && *method != "HEAD" {
                assert!(
                    resp["error_code"].is_number() && resp["message"].is_string(),
                    "{name}: not the Confluent shape: {resp}"
                );
                // The registry's own answers to permitted requests are the registry's to explain.
                assert!(
                    record["reason"].is_string() || record["decision"] == "permit",
                    "{name}: refusal without a reason: {record}"
                );
                let message = resp["message"].as_str().unwrap();
                assert!(
                    !message.contains("InvalidSignature") && !message.contains("kid"),
                    "{name}: detail leaked: {message}"
                );
            }
        }
    }

    #[tokio::test]
    async fn plus_is_a_literal_plus_upstream() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        let (status, body) = stack
            .call(
                "POST",
                "/subjects/payments-a+b/versions",
                &tokens.owner,
                Some(SCHEMA),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let subjects: Vec<String> = stack
            .http
            .get(format!("{}/subjects", stack.registry))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            subjects,
            ["payments-a+b"],
            "registered under the name that was authorized"
        );
    }

    #[tokio::test]
    async fn valid_ec_tokens_and_rotated_keys_are_accepted() {
        let stack = Stack::start(Flavor::Confluent).await;
        let claims = stack.idp.claims("olivia", &["owners"]);
        let ec = stack.idp.sign(&claims, Algorithm::ES256, Some(EC_KID));
        let (status, body) = stack
            .call(
                "POST",
                "/subjects/payments-value/versions",
                &ec,
                Some(SCHEMA),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let rotated = stack
            .idp
            .sign(&claims, Algorithm::RS256, Some(support::ROTATED_KID));
        let (status, _) = stack
            .call("GET", "/subjects/payments-value/versions", &rotated, None)
            .await;
        assert_eq!(
            status, 401,
            "a key the provider has not published is unknown"
        );
        stack.idp.publish_rotated_key();
        let (status, body) = stack
            .call("GET", "/subjects/payments-value/versions", &rotated, None)
            .await;
        assert_eq!(status, 200, "the unknown kid triggers a refetch: {body}");
    }
}

mod behaviour {
    use super::*;

    #[tokio::test]
    async fn lists_are_filtered_to_readable_subjects() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        let (_, owner_view) = stack.call("GET", "/subjects", &tokens.owner, None).await;
        assert_eq!(
            owner_view,
            json!([":.ctx:payments-value", "payments-tmp", "payments-value"])
        );
        let (_, admin_view) = stack.call("GET", "/subjects", &tokens.admin, None).await;
        assert_eq!(admin_view.as_array().unwrap().len(), 5);
        let (status, outsider_view) = stack.call("GET", "/subjects", &tokens.outsider, None).await;
        assert_eq!((status, outsider_view), (200, json!([])));
        let (_, schemas) = stack.call("GET", "/schemas", &tokens.owner, None).await;
        assert!(
            schemas
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["subject"].as_str().unwrap().contains("payments")),
            "{schemas}"
        );
        let (_, id_subjects) = stack
            .call("GET", "/schemas/ids/1/subjects", &tokens.owner, None)
            .await;
        assert_eq!(
            id_subjects,
            json!(["payments-value"]),
            "orders-value also uses id 1 but is not readable"
        );
        let (_, id_versions) = stack
            .call("GET", "/schemas/ids/1/versions", &tokens.owner, None)
            .await;
        assert_eq!(
            id_versions,
            json!([{"subject": "payments-value", "version": 1}])
        );
    }

    #[tokio::test]
    async fn reads_by_id_follow_the_subjects_using_it_and_are_cached() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        let (status, body, first) =
            as_principal(&stack, &tokens.owner, "GET", "/schemas/ids/1", &[], None).await;
        assert_eq!((status, &body["schema"]), (200, &json!("\"string\"")));
        assert_eq!(first["cache"], "miss");
        let (status, again, second) =
            as_principal(&stack, &tokens.owner, "GET", "/schemas/ids/1", &[], None).await;
        assert_eq!((status, again), (200, body));
        assert_eq!(second["cache"], "hit");
        assert_eq!(second["upstream_status"], Value::Null);
        let (status, _, denied) =
            as_principal(&stack, &tokens.outsider, "GET", "/schemas/ids/1", &[], None).await;
        assert_eq!(
            (status, denied["decision"].as_str()),
            (403, Some("deny")),
            "the cache never skips authorization"
        );
    }

    #[tokio::test]
    async fn unknown_ids_are_the_registrys_answer_to_readers_of_everything_and_a_refusal_to_others()
    {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        // Direct, the registry answers these itself.
        for id in ["99", "abc", "-1", "99999999999"] {
            let direct = stack
                .http
                .get(format!("{}/schemas/ids/{id}", stack.registry))
                .send()
                .await
                .unwrap();
            let direct_status = direct.status().as_u16();
            let direct_body: Value = direct.json().await.unwrap();
            let target = format!("/schemas/ids/{id}");
            let (status, body, record) =
                as_principal(&stack, &tokens.admin, "GET", &target, &[], None).await;
            assert_eq!(
                (status, &body),
                (direct_status, &direct_body),
                "{id}: a reader of every subject gets the registry's answer"
            );
            assert_eq!(record["decision"], "permit", "{record}");
            // Owners of some subjects get one answer for an id nobody uses, one that is not a
            // number, and one only other teams' subjects use (id 4): nothing to tell apart.
            let (status, body, record) =
                as_principal(&stack, &tokens.owner, "GET", &target, &[], None).await;
            assert_eq!(status, 403, "{id}: {body}");
            assert_eq!(
                body["message"],
                format!("User olivia is denied operation read on schema id {id}")
            );
            assert_eq!(record["decision"], "deny");
        }
        let (status, foreign, _) =
            as_principal(&stack, &tokens.owner, "GET", "/schemas/ids/4", &[], None).await;
        assert_eq!(
            (status, foreign["message"].as_str()),
            (
                403,
                Some("User olivia is denied operation read on schema id 4")
            )
        );
        let (status, body, _) = as_principal(
            &stack,
            &tokens.admin,
            "GET",
            "/schemas/ids/99/versions",
            &[],
            None,
        )
        .await;
        assert_eq!((status, &body["error_code"]), (404, &json!(40403)));
    }

    #[tokio::test]
    async fn audit_records_carry_every_field() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        let (status, _, r) = as_principal(
            &stack,
            &tokens.owner,
            "POST",
            "/subjects/payments-value/versions?normalize=false",
            &[],
            Some(SCHEMA),
        )
        .await;
        assert_eq!(status, 200);
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
        assert!(!r["request_id"].as_str().unwrap().is_empty());
        assert_eq!(r["principal"], "user:olivia");
        assert_eq!(r["groups"], json!(["owners"]));
        assert_eq!(r["client_id"], "olivia-client");
        assert!(r["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(r["method"], "POST");
        assert_eq!(
            r["path"],
            "/subjects/payments-value/versions?normalize=false"
        );
        assert_eq!(r["endpoint"], "POST /subjects/{subject}/versions");
        assert_eq!(r["subjects"], json!(["payments-value"]));
        assert_eq!(r["operation"], "write");
        assert_eq!(r["decision"], "permit");
        assert_eq!(r["rule_id"], "owners");
        assert_eq!(r["upstream_status"], 200);
        assert_eq!(r["status"], 200);
        assert!(r["latency_us"].is_u64());
        let (_, _, r2) = as_principal(
            &stack,
            &tokens.owner,
            "GET",
            "/subjects/payments-value/versions",
            &[],
            None,
        )
        .await;
        assert_ne!(r["request_id"], r2["request_id"]);
    }

    #[tokio::test]
    async fn audit_mode_records_denials_and_lets_them_through() {
        let stack = Stack::start_with(Flavor::Confluent, registry_proxy::config::Mode::Audit).await;
        let tokens = Tokens::new(&stack);
        let (status, _, r) = as_principal(
            &stack,
            &tokens.outsider,
            "POST",
            "/subjects/orders-value/versions",
            &[],
            Some(SCHEMA),
        )
        .await;
        assert_eq!(
            (status, r["decision"].as_str()),
            (200, Some("audit_only_deny"))
        );
        let (status, _) = stack.raw("GET", "/subjects", &[], None).await;
        assert_eq!(status, 401, "authentication is enforced in audit mode too");
    }

    #[tokio::test]
    async fn policy_changes_apply_without_restart_and_bad_ones_are_refused() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        let (status, _) = stack
            .call(
                "GET",
                "/subjects/orders-value/versions",
                &tokens.outsider,
                None,
            )
            .await;
        assert_eq!(status, 403);
        let grant = format!(
            "{}    - id: outsiders-read-orders\n      principals: [\"user:otto\"]\n      subjects: [\"orders-*\"]\n      operations: [read]\n",
            support::POLICY
        );
        std::fs::write(stack.policies.join("registry.yaml"), grant).unwrap();
        let mut record = Value::Null;
        for _ in 0..300 {
            let (status, _, r) = as_principal(
                &stack,
                &tokens.outsider,
                "GET",
                "/subjects/orders-value/versions",
                &[],
                None,
            )
            .await;
            if status == 200 {
                record = r;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            record["rule_id"], "outsiders-read-orders",
            "the reloaded policy is in force"
        );

        std::fs::write(stack.policies.join("broken.yaml"), "registry:\n  rules:\n    - id: x\n      principals: [\"*\"]\n      subjects: [\"*\"]\n      operations: [everything]\n").unwrap();
        std::fs::write(stack.policies.join("registry.yaml"), support::POLICY).unwrap();
        // Give the poller several rounds to (wrongly) apply the directory.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let (status, _) = stack
            .call(
                "GET",
                "/subjects/orders-value/versions",
                &tokens.outsider,
                None,
            )
            .await;
        assert_eq!(
            status, 200,
            "a directory that does not validate leaves the previous policy in force"
        );
    }

    #[tokio::test]
    async fn unknown_key_ids_refetch_the_jwks_at_most_once_per_interval() {
        let stack = Stack::start_configured(Flavor::Confluent, |c| {
            c.oidc.jwks_min_refetch_ms = 3_600_000
        })
        .await;
        let claims = stack.idp.claims("olivia", &["owners"]);
        for i in 0..20 {
            let forged = stack.idp.sign(
                &claims,
                jsonwebtoken::Algorithm::RS256,
                Some(&format!("invented-{i}")),
            );
            let (status, _) = stack.call("GET", "/subjects", &forged, None).await;
            assert_eq!(status, 401);
        }
        let text = stack
            .http
            .get(format!("{}/metrics", stack.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(r#"registry_proxy_jwks_refreshes_total{result="ok"} 1"#),
            "only the startup fetch: {text}"
        );
    }

    #[tokio::test]
    async fn metrics_count_requests_cache_hits_and_jwks_fetches() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        seed(&stack, &tokens).await;
        for _ in 0..2 {
            stack
                .call("GET", "/schemas/ids/1", &tokens.owner, None)
                .await;
        }
        stack.call("GET", "/config", &tokens.owner, None).await;
        let text = stack
            .http
            .get(format!("{}/metrics", stack.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(r#"registry_proxy_requests_total{decision="deny",operation="global_read",status="403"} 1"#), "{text}");
        assert!(
            text.contains(r#"registry_proxy_cache_total{cache="schema",result="hit"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"registry_proxy_jwks_refreshes_total{result="ok"}"#),
            "{text}"
        );
        assert!(
            text.contains("registry_proxy_upstream_seconds_bucket"),
            "{text}"
        );
        let health = stack
            .http
            .get(format!("{}/healthz", stack.admin))
            .send()
            .await
            .unwrap();
        assert!(health.status().is_success());
    }
}

mod upstream_answers {
    use super::*;
    use axum::{
        Router,
        body::Body,
        http::{Request, StatusCode},
        response::IntoResponse,
    };
    use std::sync::{Arc, Mutex};

    /// (method, path and query, status, body) a registry answers; anything else is 404 40401.
    type Script = &'static [(&'static str, &'static str, u16, &'static str)];

    /// Requests the scripted upstream received, as "METHOD path?query".
    type Seen = Arc<Mutex<Vec<String>>>;

    fn scripted(script: Script) -> (Router, Seen) {
        let seen = Seen::default();
        let log = seen.clone();
        let router = Router::new().fallback(move |req: Request<Body>| {
            let log = log.clone();
            async move {
                let target = format!(
                    "{} {}",
                    req.method(),
                    req.uri().path_and_query().map_or("", |p| p.as_str())
                );
                log.lock().unwrap().push(target.clone());
                let (status, body) = script
                    .iter()
                    .find(|(m, p, _, _)| format!("{m} {p}") == target)
                    .map_or(
                        (
                            404,
                            r#"{"error_code":40401,"message":"Subject not found."}"#,
                        ),
                        |(_, _, status, body)| (*status, *body),
                    );
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/vnd.schemaregistry.v1+json")],
                    body,
                )
                    .into_response()
            }
        });
        (router, seen)
    }

    async fn scripted_stack(flavor: Flavor, script: Script) -> (Stack, Seen) {
        let (router, seen) = scripted(script);
        (Stack::start_scripted(flavor, router).await, seen)
    }

    #[tokio::test]
    async fn associations_are_read_filtered_and_written_per_subject() {
        const BOTH: &str = r#"[{"subject":"orders-value","resourceName":"orders","resourceNamespace":"lkc-1","resourceType":"topic","associationType":"value","lifecycle":"WEAK","frozen":false},{"subject":"payments-value","resourceName":"orders","resourceNamespace":"lkc-1","resourceType":"topic","associationType":"value","lifecycle":"WEAK","frozen":false}]"#;
        let (stack, seen) = scripted_stack(
            Flavor::Confluent,
            &[
                (
                    "GET",
                    "/associations/resources/-/orders?resourceType=topic&associationType=value",
                    200,
                    BOTH,
                ),
                (
                    "GET",
                    "/associations/resources/-/payments?resourceType=topic&associationType=value",
                    404,
                    r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#,
                ),
                ("POST", "/associations", 200, r#"{"resourceName":"payments"}"#),
                (
                    "GET",
                    "/associations/resources/topic-1?resourceType=topic",
                    200,
                    r#"[{"subject":"orders-value","associationType":"value"}]"#,
                ),
                (
                    "GET",
                    "/associations/resources/topic-2?resourceType=topic",
                    200,
                    r#"[{"subject":"payments-value","associationType":"value"},{"subject":"payments-key","associationType":"key"}]"#,
                ),
                (
                    "GET",
                    "/associations/resources/topic-3?resourceType=topic",
                    200,
                    "[]",
                ),
                (
                    "DELETE",
                    "/associations/resources/topic-2?resourceType=topic",
                    204,
                    "",
                ),
                (
                    "DELETE",
                    "/associations/resources/topic-2?resourceType=topic&cascadeLifecycle=true",
                    204,
                    "",
                ),
                (
                    "DELETE",
                    "/associations/resources/topic-3?resourceType=topic",
                    404,
                    r#"{"error_code":40413,"message":"Association for resource topic-3 not found"}"#,
                ),
            ],
        )
        .await;
        let tokens = Tokens::new(&stack);
        let superuser = stack.idp.token("sam", &["superusers"]);
        let outsider_admin = stack.idp.token("adam", &["admins"]);

        // What confluent-kafka 2.16's serializers ask first: filtered to readable subjects.
        let target = "/associations/resources/-/orders?resourceType=topic&associationType=value";
        let (status, body, record) =
            as_principal(&stack, &tokens.owner, "GET", target, &[], None).await;
        assert_eq!(status, 200);
        assert_eq!(
            body.as_array()
                .unwrap()
                .iter()
                .map(|a| &a["subject"])
                .collect::<Vec<_>>(),
            [&json!("payments-value")]
        );
        assert_eq!(record["decision"], "permit");
        let (status, body, _) = as_principal(&stack, &superuser, "GET", target, &[], None).await;
        assert_eq!(
            (status, body),
            (200, serde_json::from_str::<Value>(BOTH).unwrap())
        );
        // A registry without the API answers 404, and the serializer falls back: so must we.
        let (status, body, _) = as_principal(
            &stack,
            &tokens.owner,
            "GET",
            "/associations/resources/-/payments?resourceType=topic&associationType=value",
            &[],
            None,
        )
        .await;
        assert_eq!((status, &body["error_code"]), (404, &json!(404)));

        // Creating: `write` on every subject named.
        let create = |subject: &str| {
            format!(
                r#"{{"resourceName":"payments","resourceNamespace":"lkc-1","resourceType":"topic","associations":[{{"subject":"{subject}","associationType":"value","lifecycle":"WEAK"}}]}}"#
            )
        };
        let (status, _, _) = as_principal(
            &stack,
            &tokens.owner,
            "POST",
            "/associations",
            &[],
            Some(&create("payments-value")),
        )
        .await;
        assert_eq!(status, 200);
        let (status, body, record) = as_principal(
            &stack,
            &tokens.owner,
            "POST",
            "/associations",
            &[],
            Some(&create("orders-value")),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(record["subjects"], json!(["orders-value"]));

        // Deleting: `write` on each subject the resource is associated with now, and `delete`
        // when the lifecycle cascades (a strong association's subject goes with it).
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "DELETE",
            "/associations/resources/topic-1?resourceType=topic",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, record["subjects"].clone()),
            (403, json!(["orders-value"]))
        );
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "DELETE",
            "/associations/resources/topic-2?resourceType=topic",
            &[],
            None,
        )
        .await;
        assert_eq!(status, 204, "{record}");
        assert_eq!(
            record["subjects"],
            json!(["payments-value", "payments-key"])
        );
        let (status, _, record) = as_principal(
            &stack,
            &outsider_admin,
            "DELETE",
            "/associations/resources/topic-2?resourceType=topic&cascadeLifecycle=true",
            &[],
            None,
        )
        .await;
        assert_eq!((status, record["operation"].as_str()), (403, Some("write")));
        let (status, _, _) = as_principal(
            &stack,
            &tokens.owner,
            "DELETE",
            "/associations/resources/topic-2?resourceType=topic&cascadeLifecycle=true",
            &[],
            None,
        )
        .await;
        assert_eq!(status, 204);
        // No association: nothing to authorize, the registry answers.
        let (status, body, _) = as_principal(
            &stack,
            &tokens.owner,
            "DELETE",
            "/associations/resources/topic-3?resourceType=topic",
            &[],
            None,
        )
        .await;
        assert_eq!((status, &body["error_code"]), (404, &json!(40413)));
        let deletes: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("DELETE"))
            .cloned()
            .collect();
        assert_eq!(
            deletes,
            [
                "DELETE /associations/resources/topic-2?resourceType=topic",
                "DELETE /associations/resources/topic-2?resourceType=topic&cascadeLifecycle=true",
                "DELETE /associations/resources/topic-3?resourceType=topic",
            ],
            "refused deletes never reach the registry"
        );
    }

    #[tokio::test]
    async fn deks_belong_to_the_subject_they_encrypt() {
        let (stack, _) = scripted_stack(
            Flavor::Confluent,
            &[
                (
                    "GET",
                    "/dek-registry/v1/keks/k1/deks/payments-value?algorithm=AES256_GCM",
                    200,
                    r#"{"kekName":"k1","subject":"payments-value","version":1}"#,
                ),
                (
                    "GET",
                    "/dek-registry/v1/keks/k1/deks",
                    200,
                    r#"["orders-value","payments-value"]"#,
                ),
                (
                    "POST",
                    "/dek-registry/v1/keks/k1/deks",
                    200,
                    r#"{"kekName":"k1","subject":"payments-value","version":1}"#,
                ),
                ("GET", "/dek-registry/v1/keks/k1", 200, r#"{"name":"k1"}"#),
            ],
        )
        .await;
        let tokens = Tokens::new(&stack);
        let target = "/dek-registry/v1/keks/k1/deks/payments-value?algorithm=AES256_GCM";
        let (status, _, _) = as_principal(&stack, &tokens.owner, "GET", target, &[], None).await;
        assert_eq!(status, 200);
        let (status, _, record) =
            as_principal(&stack, &tokens.outsider, "GET", target, &[], None).await;
        assert_eq!((status, record["operation"].as_str()), (403, Some("read")));
        let (_, body, _) = as_principal(
            &stack,
            &tokens.owner,
            "GET",
            "/dek-registry/v1/keks/k1/deks",
            &[],
            None,
        )
        .await;
        assert_eq!(body, json!(["payments-value"]));
        for (subject, want) in [("payments-value", 200), ("orders-value", 403)] {
            let (status, body, _) = as_principal(
                &stack,
                &tokens.owner,
                "POST",
                "/dek-registry/v1/keks/k1/deks",
                &[],
                Some(&format!(
                    r#"{{"subject":"{subject}","algorithm":"AES256_GCM"}}"#
                )),
            )
            .await;
            assert_eq!(status, want, "{subject}: {body}");
        }
        // A KEK is registry configuration.
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "GET",
            "/dek-registry/v1/keks/k1",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, record["operation"].as_str()),
            (403, Some("global_read"))
        );
        let (status, _, _) = as_principal(
            &stack,
            &tokens.admin,
            "GET",
            "/dek-registry/v1/keks/k1",
            &[],
            None,
        )
        .await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn apicurio_reads_by_id_resolve_to_exact_groups_through_search() {
        // Apicurio 3's ccompat answers id lookups with bare artifact ids from every group,
        // whatever X-Registry-GroupId says; its search API names (group, artifact) exactly.
        // Content id 42 is `card` in group `secret`; content id 43 is `card` in group `mine`.
        let (stack, seen) = scripted_stack(
            Flavor::Apicurio,
            &[
                (
                    "GET",
                    "/apis/registry/v3/search/versions?contentId=42&limit=1000",
                    200,
                    r#"{"versions":[{"groupId":"secret","artifactId":"card","version":"1","globalId":7,"contentId":42}],"count":1}"#,
                ),
                (
                    "GET",
                    "/apis/registry/v3/search/versions?contentId=43&limit=1000",
                    200,
                    r#"{"versions":[{"groupId":"mine","artifactId":"card","version":"1","globalId":8,"contentId":43}],"count":1}"#,
                ),
                (
                    "GET",
                    "/apis/registry/v3/search/versions?contentId=44&limit=1000",
                    200,
                    r#"{"versions":[],"count":0}"#,
                ),
                (
                    "GET",
                    "/apis/registry/v3/search/versions?globalId=8&limit=1000",
                    200,
                    r#"{"versions":[{"groupId":"mine","artifactId":"card","version":"1","globalId":8,"contentId":43}],"count":1}"#,
                ),
                (
                    "GET",
                    "/apis/ccompat/v7/schemas/ids/42",
                    200,
                    r#"{"schema":"\"string\""}"#,
                ),
                (
                    "GET",
                    "/apis/ccompat/v7/schemas/ids/43",
                    200,
                    r#"{"schema":"\"int\""}"#,
                ),
                (
                    "GET",
                    "/apis/ccompat/v7/schemas/ids/42/subjects",
                    200,
                    r#"["card"]"#,
                ),
                (
                    "GET",
                    "/apis/registry/v3/ids/contentIds/43",
                    200,
                    r#""int""#,
                ),
                (
                    "GET",
                    "/apis/registry/v3/ids/globalIds/8",
                    200,
                    r#""int""#,
                ),
                ("GET", "/apis/registry/v3/admin/export", 200, r#""zip""#),
            ],
        )
        .await;
        let mine = stack.idp.token("mia", &["mine-readers"]);
        let auditor = stack.idp.token("aude", &["auditors"]);
        let admin = stack.idp.token("adam", &["admins"]);
        let group = [("X-Registry-GroupId", "mine")];
        // Another group's content: refused, whichever group header is sent.
        let (status, body, record) = as_principal(
            &stack,
            &mine,
            "GET",
            "/apis/ccompat/v7/schemas/ids/42",
            &group,
            None,
        )
        .await;
        assert_eq!(
            (status, record["decision"].as_str()),
            (403, Some("deny")),
            "{body}"
        );
        assert_eq!(record["subjects"], json!([":.secret:card"]));
        // Its own group's content: permitted, and the audit record names the artifact.
        let (status, body, record) = as_principal(
            &stack,
            &mine,
            "GET",
            "/apis/ccompat/v7/schemas/ids/43",
            &[],
            None,
        )
        .await;
        assert_eq!((status, &body["schema"]), (200, &json!("\"int\"")));
        assert_eq!(record["subjects"], json!([":.mine:card"]));
        // Unknown to the search: the same refusal as another group's.
        let (status, body, _) = as_principal(
            &stack,
            &mine,
            "GET",
            "/apis/ccompat/v7/schemas/ids/44",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (
                403,
                Some("User mia is denied operation read on schema id 44")
            )
        );
        // Native reads by content or global id, the same way.
        for target in [
            "/apis/registry/v3/ids/contentIds/43",
            "/apis/registry/v3/ids/globalIds/8",
        ] {
            let (status, _, record) = as_principal(&stack, &mine, "GET", target, &[], None).await;
            assert_eq!(status, 200, "{target}: {record}");
        }
        // Which subjects use an id: bare names from every group, so `read` on every subject.
        let target = "/apis/ccompat/v7/schemas/ids/42/subjects";
        let (status, _, record) = as_principal(&stack, &mine, "GET", target, &group, None).await;
        assert_eq!(status, 403);
        assert_eq!(record["subjects"], json!(["*"]));
        let (status, _, _) = as_principal(&stack, &admin, "GET", target, &group, None).await;
        assert_eq!(status, 200);
        // The searches are cached like Confluent's id lookups.
        let (status, _, _) = as_principal(
            &stack,
            &mine,
            "GET",
            "/apis/ccompat/v7/schemas/ids/43",
            &[],
            None,
        )
        .await;
        assert_eq!(status, 200);
        let searches = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("search/versions?contentId=43"))
            .count();
        assert_eq!(searches, 1, "one search for id 43");
        // The export is every artifact: global_write, not global_read.
        let target = "/apis/registry/v3/admin/export";
        let (status, _, record) = as_principal(&stack, &auditor, "GET", target, &[], None).await;
        assert_eq!(
            (status, record["operation"].as_str()),
            (403, Some("global_write"))
        );
        let (status, _, _) = as_principal(&stack, &admin, "GET", target, &[], None).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn apicurio_legacy_id_mode_looks_ccompat_ids_up_as_global_ids() {
        let (router, _) = scripted(&[
            (
                "GET",
                "/apis/registry/v3/search/versions?globalId=8&limit=1000",
                200,
                r#"{"versions":[{"groupId":"mine","artifactId":"card","version":"1"}],"count":1}"#,
            ),
            (
                "GET",
                "/apis/ccompat/v7/schemas/ids/8",
                200,
                r#"{"schema":"\"int\""}"#,
            ),
        ]);
        let stack = Stack::start_scripted_configured(Flavor::Apicurio, router, |c| {
            c.apicurio_legacy_id_mode = true
        })
        .await;
        let mine = stack.idp.token("mia", &["mine-readers"]);
        let (status, body, _) = as_principal(
            &stack,
            &mine,
            "GET",
            "/apis/ccompat/v7/schemas/ids/8",
            &[],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    const FALLBACK: &str =
        r#"{"subject":":.secret:payments-value","version":5,"id":9,"schema":"\"string\""}"#;

    #[tokio::test]
    async fn confluent_context_fallback_answers_not_found() {
        // Confluent answers for `:.secret:payments-value` when the default-context subject has
        // no version 5, or no such schema.
        let (stack, seen) = scripted_stack(
            Flavor::Confluent,
            &[
                ("GET", "/subjects/payments-value/versions/5", 200, FALLBACK),
                ("POST", "/subjects/payments-value", 200, FALLBACK),
                (
                    "GET",
                    "/subjects/payments-value/versions/5/schema",
                    200,
                    r#""string""#,
                ),
                (
                    "GET",
                    "/subjects/payments-value/versions/5/referencedby",
                    200,
                    "[9]",
                ),
                (
                    "GET",
                    "/subjects/payments-value/versions/1",
                    200,
                    r#"{"subject":"payments-value","version":1,"id":1,"schema":"\"string\""}"#,
                ),
                (
                    "GET",
                    "/subjects/payments-value/versions/1/schema",
                    200,
                    r#""string""#,
                ),
                (
                    "GET",
                    "/contexts/.ctx/subjects/payments-value/versions/1",
                    200,
                    r#"{"subject":":.ctx:payments-value","version":1,"id":2,"schema":"\"int\""}"#,
                ),
            ],
        )
        .await;
        let owner = stack.idp.token("olivia", &["owners"]);
        for (method, target, body) in [
            ("GET", "/subjects/payments-value/versions/5", None),
            ("POST", "/subjects/payments-value", Some(SCHEMA)),
            ("GET", "/subjects/payments-value/versions/5/schema", None),
            (
                "GET",
                "/subjects/payments-value/versions/5/referencedby",
                None,
            ),
        ] {
            let (status, resp, record) =
                as_principal(&stack, &owner, method, target, &[], body).await;
            assert_eq!(
                (status, &resp["error_code"]),
                (404, &json!(40401)),
                "{method} {target}: {resp}"
            );
            assert_eq!(record["decision"], "not_found", "{target}");
            assert!(
                record["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(":.secret:payments-value")),
                "{record}"
            );
        }
        let seen = seen.lock().unwrap().clone();
        assert!(
            !seen
                .iter()
                .any(|r| r.ends_with("/schema") || r.ends_with("/referencedby")),
            "checked before forwarding: {seen:?}"
        );
        for target in [
            "/subjects/payments-value/versions/1",
            "/subjects/payments-value/versions/1/schema",
            "/contexts/.ctx/subjects/payments-value/versions/1",
        ] {
            let (status, resp, record) =
                as_principal(&stack, &owner, "GET", target, &[], None).await;
            assert_eq!(
                (status, record["decision"].as_str()),
                (200, Some("permit")),
                "{target}: {resp}"
            );
        }
    }

    #[tokio::test]
    async fn context_paths_keep_to_their_context() {
        // Confluent answers with stored names: `payments-value` is the default context's.
        let (stack, _) = scripted_stack(
            Flavor::Confluent,
            &[
                (
                    "GET",
                    "/contexts/.mine/subjects",
                    200,
                    r#"["payments-value",":.mine:orders"]"#,
                ),
                (
                    "GET",
                    "/contexts/.mine/schemas/ids/7/versions?deleted=true",
                    200,
                    r#"[{"subject":"secret-value","version":1}]"#,
                ),
                (
                    "GET",
                    "/contexts/.mine/schemas/ids/7",
                    200,
                    r#"{"schema":"\"string\""}"#,
                ),
            ],
        )
        .await;
        let mine = stack.idp.token("mia", &["mine-readers"]);
        let (status, body, _) =
            as_principal(&stack, &mine, "GET", "/contexts/.mine/subjects", &[], None).await;
        assert_eq!((status, body), (200, json!([":.mine:orders"])));
        let (status, body, record) = as_principal(
            &stack,
            &mine,
            "GET",
            "/contexts/.mine/schemas/ids/7",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, record["decision"].as_str()),
            (403, Some("deny")),
            "{body}"
        );
        assert_eq!(record["subjects"], json!(["secret-value"]));
        for target in [
            "/contexts/.mine/schemas?subjectPrefix=:*:payments",
            "/contexts/.mine/schemas/ids/7?subject=:.:",
            "/contexts/.mine/subjects?subjectPrefix=:*:",
        ] {
            let (status, body, record) =
                as_principal(&stack, &mine, "GET", target, &[], None).await;
            assert_eq!(
                (status, record["decision"].as_str()),
                (400, Some("refused")),
                "{target}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn encoded_slash_never_reaches_karapace() {
        let (stack, seen) = scripted_stack(Flavor::Karapace, &[]).await;
        let owner = stack.idp.token("olivia", &["owners"]);
        let (status, _, record) = as_principal(
            &stack,
            &owner,
            "POST",
            "/subjects/payments-value%2Fversions",
            &[],
            Some(SCHEMA),
        )
        .await;
        assert_eq!(
            (status, record["decision"].as_str()),
            (400, Some("refused"))
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn upstream_5xx_bodies_are_replaced() {
        let (stack, _) = scripted_stack(
            Flavor::Confluent,
            &[(
                "GET",
                "/subjects/payments-value/versions",
                500,
                r#"{"error_code":50001,"message":"Error in the backend datastore: java.sql.SQLException: connection to db-internal-7:5432 refused"}"#,
            )],
        )
        .await;
        let owner = stack.idp.token("olivia", &["owners"]);
        let (status, body, record) = as_principal(
            &stack,
            &owner,
            "GET",
            "/subjects/payments-value/versions",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, body),
            (
                500,
                json!({"error_code": 50201, "message": "upstream registry error"})
            )
        );
        assert_eq!(record["upstream_status"], 500);
        assert_eq!(record["reason"], "upstream answered 500");
    }
}

mod aliases_and_references {
    use super::*;

    #[tokio::test]
    async fn alias_needs_every_subject_operation_on_its_target() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        // Owners may read and configure shared-value, not write to or delete it: an alias
        // would let them do both through payments-value.
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "PUT",
            "/config/payments-value",
            &[],
            Some(r#"{"alias":"shared-value"}"#),
        )
        .await;
        assert_eq!((status, record["decision"].as_str()), (403, Some("deny")));
        assert_eq!(
            record["reason"],
            "no rule grants write on subject shared-value"
        );
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "PUT",
            "/config/payments-value",
            &[],
            Some(r#"{"alias":"payments-other"}"#),
        )
        .await;
        assert_eq!((status, record["decision"].as_str()), (200, Some("permit")));
    }

    #[tokio::test]
    async fn body_names_are_in_the_path_subjects_context() {
        let stack = Stack::start(Flavor::Confluent).await;
        let tokens = Tokens::new(&stack);
        let (_, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "PUT",
            "/config/:.ctx:payments-a",
            &[],
            Some(r#"{"alias":"payments-b"}"#),
        )
        .await;
        assert_eq!(record["decision"], "permit");
        assert_eq!(
            record["subjects"],
            json!([":.ctx:payments-a", ":.ctx:payments-b"]),
            "Confluent qualifies the alias with the subject's context"
        );
        let (_, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "PUT",
            "/config/:.ctx:payments-a",
            &[],
            Some(r#"{"alias":":.:payments-b"}"#),
        )
        .await;
        assert_eq!(
            record["subjects"],
            json!([":.ctx:payments-a", "payments-b"]),
            "an explicitly qualified alias keeps its context"
        );
        // Owners may read shared-value in the default context, not in .ctx.
        let (status, _, record) = as_principal(
            &stack,
            &tokens.owner,
            "POST",
            "/subjects/:.ctx:payments-a/versions",
            &[],
            Some(
                r#"{"schema":"\"string\"","references":[{"name":"s","subject":"shared-value","version":1}]}"#,
            ),
        )
        .await;
        assert_eq!((status, record["decision"].as_str()), (403, Some("deny")));
        assert_eq!(
            record["reason"],
            "no rule grants read on subject :.ctx:shared-value"
        );
    }
}
