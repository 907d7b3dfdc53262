//! Learning each connection's authenticated principal from the SASL exchange it passes through.
//!
//! The broker authenticates; the proxy only watches. The name the client claims is read from
//! its SaslAuthenticate request (PLAIN `authzid\0authcid\0password`, SCRAM's client-first
//! `n=user`, OAUTHBEARER's JWT `sub`) and becomes the connection's principal only once the
//! broker answers the final round without error.

use kafka_protocol::{
    messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest},
    protocol::Decodable,
};

use bytes::Bytes;

use crate::error::{Error, Side};

/// SASL progress on one connection.
#[derive(Debug, Default, Clone)]
pub struct SaslState {
    /// The mechanism the client asked for in SaslHandshake.
    pub mechanism: Option<String>,
    /// The name the client claims, until the broker confirms it.
    claimed: Option<String>,
    /// The broker-confirmed principal, `User:name` as Kafka writes it.
    pub principal: Option<String>,
}

fn decode_request<M: Decodable>(payload: Bytes, api: ApiKey, version: i16) -> Result<M, Error> {
    let mut buf = payload;
    let malformed = |e: anyhow::Error| Error::Malformed {
        side: Side::Client,
        api,
        version,
        reason: e.to_string(),
    };
    kafka_protocol::messages::RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(malformed)?;
    M::decode(&mut buf, version).map_err(malformed)
}

impl SaslState {
    /// The state of a connection already authenticated as `principal` (mutual TLS), if any.
    pub fn authenticated_as(principal: Option<String>) -> Self {
        Self {
            principal,
            ..Self::default()
        }
    }

    /// Watches a SaslHandshake request (`payload` without the length prefix).
    pub fn on_handshake(&mut self, payload: Bytes, version: i16) -> Result<(), Error> {
        let req: SaslHandshakeRequest = decode_request(payload, ApiKey::SaslHandshake, version)?;
        self.mechanism = Some(req.mechanism.to_string());
        Ok(())
    }

    /// Watches a SaslAuthenticate request for the name the client claims.
    pub fn on_authenticate_request(&mut self, payload: Bytes, version: i16) -> Result<(), Error> {
        let req: SaslAuthenticateRequest =
            decode_request(payload, ApiKey::SaslAuthenticate, version)?;
        if let Some(name) = claimed_name(self.mechanism.as_deref(), &req.auth_bytes) {
            self.claimed = Some(name);
        }
        Ok(())
    }

    /// Watches the broker's SaslAuthenticate response; returns the principal when this response
    /// completes a successful authentication.
    pub fn on_authenticate_response(
        &mut self,
        response: &SaslAuthenticateResponse,
    ) -> Option<&str> {
        if response.error_code != 0 {
            self.claimed = None;
            return None;
        }
        let is_scram = self
            .mechanism
            .as_deref()
            .is_some_and(|m| m.starts_with("SCRAM-"));
        // SCRAM has two rounds; only the server-final message carries the verifier `v=`.
        if is_scram && !response.auth_bytes.starts_with(b"v=") {
            return None;
        }
        let name = self.claimed.take()?;
        self.principal = Some(format!("User:{name}"));
        self.principal.as_deref()
    }
}

fn claimed_name(mechanism: Option<&str>, auth: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(auth).ok()?;
    match mechanism? {
        "PLAIN" => {
            let mut parts = text.split('\0');
            let authzid = parts.next()?;
            let authcid = parts.next()?;
            parts.next()?;
            Some(if authzid.is_empty() { authcid } else { authzid }.to_owned())
        }
        m if m.starts_with("SCRAM-") => {
            // client-first: gs2-header "n,," then "n=user,r=nonce"; "=2C"/"=3D" escape , and =.
            let bare = text.splitn(3, ',').nth(2)?;
            let user = bare.split(',').find_map(|kv| kv.strip_prefix("n="))?;
            Some(user.replace("=2C", ",").replace("=3D", "="))
        }
        "OAUTHBEARER" => {
            let token = text
                .split('\x01')
                .find_map(|kv| kv.strip_prefix("auth=Bearer "))?
                .trim();
            jwt_subject(token)
        }
        _ => None,
    }
}

/// The `sub` of a JWT, read without verification: the broker verifies the token, the proxy only
/// names the connection after the broker accepted it.
fn jwt_subject(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_response(auth: &'static [u8]) -> SaslAuthenticateResponse {
        let mut r = SaslAuthenticateResponse::default();
        r.auth_bytes = Bytes::from_static(auth);
        r
    }

    #[test]
    fn plain_principal_is_confirmed_by_the_broker() {
        let mut s = SaslState {
            mechanism: Some("PLAIN".into()),
            ..Default::default()
        };
        s.claimed = claimed_name(s.mechanism.as_deref(), b"\0alice\0secret");
        assert_eq!(
            s.on_authenticate_response(&ok_response(b"")),
            Some("User:alice")
        );
    }

    #[test]
    fn failed_authentication_leaves_no_principal() {
        let mut s = SaslState {
            mechanism: Some("PLAIN".into()),
            claimed: Some("mallory".into()),
            ..Default::default()
        };
        let mut failed = ok_response(b"");
        failed.error_code = 58;
        assert_eq!(s.on_authenticate_response(&failed), None);
        assert_eq!(s.principal, None);
    }

    #[test]
    fn scram_waits_for_the_server_final_message() {
        let mut s = SaslState {
            mechanism: Some("SCRAM-SHA-256".into()),
            ..Default::default()
        };
        s.claimed = claimed_name(s.mechanism.as_deref(), b"n,,n=bob=2Cjr,r=abc");
        assert_eq!(
            s.on_authenticate_response(&ok_response(b"r=abcdef,s=c2FsdA==,i=4096")),
            None
        );
        assert_eq!(
            s.on_authenticate_response(&ok_response(b"v=signature")),
            Some("User:bob,jr")
        );
    }

    #[test]
    fn oauthbearer_uses_the_token_subject() {
        // {"alg":"none"}.{"sub":"svc-payments","exp":1}
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdmMtcGF5bWVudHMiLCJleHAiOjF9.";
        let auth = format!("n,,\x01auth=Bearer {token}\x01\x01");
        assert_eq!(
            claimed_name(Some("OAUTHBEARER"), auth.as_bytes()).as_deref(),
            Some("svc-payments")
        );
    }

    /// Client bytes decoded by the proxy must fail with errors, never panic, whatever they are.
    #[test]
    fn random_client_requests_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the inputs get a plausible header so decoding reaches the body.
            if round % 2 == 0 && bytes.len() >= 10 {
                bytes[8..10].copy_from_slice(&(-1i16).to_be_bytes());
            }
            let payload = Bytes::from(bytes.clone());
            for version in 0..=2 {
                let mut state = SaslState::default();
                let _ = state.on_handshake(payload.clone(), version.min(1));
                state.mechanism = Some(["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"][round % 3].into());
                let _ = state.on_authenticate_request(payload.clone(), version);
                let _ = claimed_name(state.mechanism.as_deref(), &bytes);
            }
            let _ = crate::header::peek_request(&bytes);
            for version in [3, 8, 9, 13] {
                let _ = crate::header::produce_acks(&bytes, version);
            }
        }
    }

    #[test]
    fn garbage_claims_nothing() {
        assert_eq!(claimed_name(Some("PLAIN"), b"no-separators"), None);
        assert_eq!(claimed_name(Some("SCRAM-SHA-512"), b"\xff\xfe"), None);
        assert_eq!(
            claimed_name(Some("OAUTHBEARER"), b"n,,\x01auth=Bearer x\x01"),
            None
        );
        assert_eq!(claimed_name(None, b"\0a\0b"), None);
    }
}
