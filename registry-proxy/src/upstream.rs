//! The upstream registry client.
//!
//! The proxy speaks to the registry with its own credentials (basic or bearer) and forwards
//! an allowlist of request headers: content negotiation, Confluent client headers and
//! Apicurio's `X-Registry-*`. Everything else a client sends, identity headers such as
//! `X-Forwarded-User` above all, stays at the proxy, so the registry never trusts something
//! the proxy did not check.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use shared::principal::Principal;

use crate::{config::UpstreamAuth, error::Error, metrics::Metrics};

/// A buffered upstream response.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

pub struct Upstream {
    base: String,
    client: reqwest::Client,
    auth: UpstreamAuth,
    /// Answers are buffered (lists are filtered, ids cached), so their size is bounded.
    max_body: usize,
    metrics: Metrics,
}

/// Request headers forwarded to the registry.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "content-type" | "accept" | "user-agent")
        || n.starts_with("confluent-")
        || n.starts_with("x-registry-")
}

impl Upstream {
    pub fn new(
        base: String,
        auth: UpstreamAuth,
        timeout: Duration,
        max_body: usize,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would send the proxy's credentials somewhere the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(vec![format!("upstream client: {e}")]))?;
        Ok(Self {
            base,
            client,
            auth,
            max_body,
            metrics,
        })
    }

    /// Sends one request. `client_token` is forwarded only when configured.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        endpoint: &'static str,
        method: Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        body: Bytes,
        client_token: Option<&HeaderValue>,
        principal: &Principal,
        request_id: &str,
    ) -> Result<UpstreamResponse, Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in client_headers {
            if forwardable(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        if self.auth.identity_headers {
            if let Ok(v) = HeaderValue::from_str(&principal.user) {
                headers.insert("x-forwarded-user", v);
            }
            if let Ok(v) = HeaderValue::from_str(&principal.groups.join(",")) {
                headers.insert("x-forwarded-groups", v);
            }
        }
        let mut request = self
            .client
            .request(method, format!("{}{path_and_query}", self.base))
            .headers(headers);
        request = match (&self.auth.username, &self.auth.password, &self.auth.token) {
            (Some(u), Some(p), _) => request.basic_auth(u, Some(p)),
            (_, _, Some(t)) => request.bearer_auth(t),
            _ if self.auth.forward_client_token => match client_token {
                Some(t) => request.header(header::AUTHORIZATION, t.clone()),
                None => request,
            },
            _ => request,
        };
        if !body.is_empty() {
            request = request.body(body);
        }
        let started = Instant::now();
        let mut response = request
            .send()
            .await
            .map_err(|e| Error::Upstream(e.to_string()))?;
        let status = response.status().as_u16();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(Error::UpstreamTooLarge(self.max_body));
        }
        // Chunk by chunk, so an answer without a length (chunked) stops at the bound too.
        let expected = response.content_length().map_or(0, |n| n as usize);
        let mut body = bytes::BytesMut::with_capacity(expected);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::Upstream(e.to_string()))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(Error::UpstreamTooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let body = body.freeze();
        self.metrics
            .upstream_latency
            .with_label_values(&[endpoint])
            .observe(started.elapsed().as_secs_f64());
        Ok(UpstreamResponse {
            status,
            content_type,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_credential_headers_are_never_forwarded() {
        for name in [
            "x-forwarded-user",
            "x-forwarded-groups",
            "x-forwarded-email",
            "authorization",
            "cookie",
            "x-http-method-override",
            "host",
            "forwarded",
        ] {
            assert!(!forwardable(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "content-type",
            "accept",
            "confluent-client-version",
            "x-registry-groupid",
            "x-registry-artifactid",
        ] {
            assert!(forwardable(&HeaderName::from_static(name)), "{name}");
        }
    }
}
