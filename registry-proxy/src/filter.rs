//! Filtering list responses to what the caller may read.
//!
//! A listing is allowed to any authenticated caller; what it reveals is not. Each entry's
//! subject is canonicalized in the namespace the registry's names are relative to (the root
//! for Confluent and Karapace, whatever the request's context; the group for Apicurio
//! ccompat) and kept only if the caller may `read` it. A body this module cannot interpret is an error, never passed through: an
//! unfiltered list is exactly the leak filtering exists to prevent.

use serde_json::Value;

use crate::endpoints::{Filter, Namespace};

/// Filters `body` in place. `Err` when the body does not have the expected shape.
pub fn filter_body(
    filter: Filter,
    ns: &Namespace,
    body: &mut Value,
    can_read: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    let keep = |name: Option<&str>| {
        name.and_then(|n| ns.qualify(n))
            .is_some_and(|s| can_read(&s))
    };
    match filter {
        Filter::None => Ok(()),
        Filter::SubjectNames => {
            let items = body
                .as_array_mut()
                .ok_or("expected a JSON array of subjects")?;
            items.retain(|v| keep(v.as_str()));
            Ok(())
        }
        Filter::SubjectObjects => {
            let items = body
                .as_array_mut()
                .ok_or("expected a JSON array of objects")?;
            items.retain(|v| keep(v.get("subject").and_then(Value::as_str)));
            Ok(())
        }
        Filter::ApicurioArtifacts(field) => {
            let obj = body.as_object_mut().ok_or("expected a JSON object")?;
            let items = obj
                .get_mut(field)
                .and_then(Value::as_array_mut)
                .ok_or("expected an array of artifacts")?;
            items.retain(|v| {
                let group = match v.get("groupId") {
                    None | Some(Value::Null) => "default",
                    Some(g) => match g.as_str() {
                        Some(g) => g,
                        None => return false,
                    },
                };
                let artifact = v
                    .get("artifactId")
                    .or_else(|| v.get("id"))
                    .and_then(Value::as_str);
                let group_ns = if group == "default" {
                    Namespace(None)
                } else {
                    Namespace(Some(format!(".{group}")))
                };
                !group.contains(':')
                    && artifact.is_some_and(|a| {
                        !a.contains(':') && group_ns.qualify(a).is_some_and(|s| can_read(&s))
                    })
            });
            let count = items.len();
            if obj.contains_key("count") {
                obj.insert("count".into(), Value::from(count));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payments_only(s: &str) -> bool {
        s.starts_with("payments")
    }

    #[test]
    fn keeps_only_readable_subjects() {
        let mut body = json!(["payments-value", "orders-value", ":.:payments-key"]);
        filter_body(
            Filter::SubjectNames,
            &Namespace(None),
            &mut body,
            &payments_only,
        )
        .unwrap();
        assert_eq!(body, json!(["payments-value", ":.:payments-key"]));
        let mut body = json!([{"subject": "orders", "id": 1}, {"subject": "payments", "id": 2}]);
        filter_body(
            Filter::SubjectObjects,
            &Namespace(None),
            &mut body,
            &payments_only,
        )
        .unwrap();
        assert_eq!(body, json!([{"subject": "payments", "id": 2}]));
    }

    #[test]
    fn names_are_read_in_the_given_namespace() {
        let mut body = json!(["payments-value"]);
        filter_body(
            Filter::SubjectNames,
            &Namespace(Some(".grp".into())),
            &mut body,
            &payments_only,
        )
        .unwrap();
        assert_eq!(
            body,
            json!([]),
            ":.grp:payments-value is not a default-namespace subject"
        );
    }

    #[test]
    fn apicurio_lists_recount() {
        let mut body = json!({"artifacts": [{"groupId": null, "artifactId": "payments"}, {"groupId": "x", "artifactId": "payments"}], "count": 2});
        filter_body(
            Filter::ApicurioArtifacts("artifacts"),
            &Namespace(None),
            &mut body,
            &payments_only,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"artifacts": [{"groupId": null, "artifactId": "payments"}], "count": 1})
        );
    }

    #[test]
    fn unexpected_shapes_fail_closed() {
        let mut body = json!({"subjects": ["payments"]});
        assert!(
            filter_body(
                Filter::SubjectNames,
                &Namespace(None),
                &mut body,
                &payments_only
            )
            .is_err()
        );
    }
}
