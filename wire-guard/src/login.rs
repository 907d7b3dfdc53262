//! wire-guard's own SASL login, for the connections it opens itself to write dead letters.
//! Client connections are not touched by this: their SASL exchanges pass through to the broker
//! ([`crate::sasl`] only watches them).
//!
//! PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, as Kafka implements it: no channel
//! binding), with ring for the hashes and PBKDF2. The broker's SCRAM proof is checked, and its
//! iteration count is bounded, so a hostile broker can neither impersonate the cluster nor make
//! the proxy spin.

use std::{fmt, num::NonZeroU32};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// The most PBKDF2 iterations a broker may ask for (Kafka's default is 4096).
const MAX_ITERATIONS: u32 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            "SCRAM-SHA-512" => Some(Self::ScramSha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The user wire-guard logs in as.
#[derive(Clone)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One login in progress.
pub struct Exchange {
    credentials: Credentials,
    state: State,
}

enum State {
    Start,
    /// SCRAM: the client-first message without its GS2 header, and our nonce.
    SentFirst {
        bare: String,
        nonce: String,
    },
    /// SCRAM: the server signature the broker's final message must carry.
    SentFinal {
        server_signature: Vec<u8>,
    },
    Done,
}

impl Credentials {
    pub fn start(&self) -> Exchange {
        Exchange {
            credentials: self.clone(),
            state: State::Start,
        }
    }
}

fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl Exchange {
    /// The next message to send, given the broker's last answer (empty at the start);
    /// `Ok(None)` once the login is complete.
    pub fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let creds = &self.credentials;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start if creds.mechanism == Mechanism::Plain => {
                self.state = State::SentFinal {
                    server_signature: Vec::new(),
                };
                Ok(Some(
                    format!("\0{}\0{}", creds.username, creds.password).into_bytes(),
                ))
            }
            State::Start => {
                let mut raw = [0u8; 24];
                ring::rand::SystemRandom::new()
                    .fill(&mut raw)
                    .map_err(|_| "no randomness for the SCRAM nonce".to_owned())?;
                let nonce = STANDARD.encode(raw);
                let bare = format!("n={},r={nonce}", escape(&creds.username));
                let first = format!("n,,{bare}");
                self.state = State::SentFirst { bare, nonce };
                Ok(Some(first.into_bytes()))
            }
            State::SentFirst { bare, nonce } => {
                let server_first =
                    std::str::from_utf8(server).map_err(|_| "SCRAM server-first is not UTF-8")?;
                let attr = |key: &str| {
                    server_first
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .ok_or_else(|| format!("SCRAM server-first lacks {key}"))
                };
                let server_nonce = attr("r=")?;
                if !server_nonce.starts_with(&nonce) {
                    return Err("SCRAM server nonce does not extend ours".into());
                }
                let salt = STANDARD
                    .decode(attr("s=")?)
                    .map_err(|_| "SCRAM salt is not base64")?;
                let iterations: u32 = attr("i=")?
                    .parse()
                    .map_err(|_| "SCRAM iteration count is not a number")?;
                let iterations = NonZeroU32::new(iterations)
                    .filter(|i| i.get() <= MAX_ITERATIONS)
                    .ok_or_else(|| {
                        format!(
                            "SCRAM iteration count {iterations} is outside 1..={MAX_ITERATIONS}"
                        )
                    })?;
                let (pbkdf, hmac_alg, digest_alg, len) = match creds.mechanism {
                    Mechanism::ScramSha512 => (
                        pbkdf2::PBKDF2_HMAC_SHA512,
                        hmac::HMAC_SHA512,
                        &digest::SHA512,
                        64,
                    ),
                    _ => (
                        pbkdf2::PBKDF2_HMAC_SHA256,
                        hmac::HMAC_SHA256,
                        &digest::SHA256,
                        32,
                    ),
                };
                let mut salted = vec![0u8; len];
                pbkdf2::derive(
                    pbkdf,
                    iterations,
                    &salt,
                    creds.password.as_bytes(),
                    &mut salted,
                );
                let salted = hmac::Key::new(hmac_alg, &salted);
                let client_key = hmac::sign(&salted, b"Client Key");
                let stored_key = digest::digest(digest_alg, client_key.as_ref());
                let without_proof = format!("c=biws,r={server_nonce}");
                let auth_message = format!("{bare},{server_first},{without_proof}");
                let signature = hmac::sign(
                    &hmac::Key::new(hmac_alg, stored_key.as_ref()),
                    auth_message.as_bytes(),
                );
                let proof: Vec<u8> = client_key
                    .as_ref()
                    .iter()
                    .zip(signature.as_ref())
                    .map(|(a, b)| a ^ b)
                    .collect();
                let server_key = hmac::sign(&salted, b"Server Key");
                let server_signature = hmac::sign(
                    &hmac::Key::new(hmac_alg, server_key.as_ref()),
                    auth_message.as_bytes(),
                );
                self.state = State::SentFinal {
                    server_signature: server_signature.as_ref().to_vec(),
                };
                Ok(Some(
                    format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
                ))
            }
            State::SentFinal { server_signature } => {
                if creds.mechanism != Mechanism::Plain {
                    let text = std::str::from_utf8(server).unwrap_or_default();
                    if let Some(e) = text.strip_prefix("e=") {
                        return Err(format!("SCRAM refused: {e}"));
                    }
                    let verifier = text
                        .strip_prefix("v=")
                        .and_then(|v| STANDARD.decode(v).ok())
                        .ok_or("SCRAM server-final carries no verifier")?;
                    if verifier != server_signature {
                        return Err("the broker's SCRAM signature is wrong".into());
                    }
                }
                Ok(None)
            }
            State::Done => Err("SASL exchange already complete".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(mechanism: Mechanism) -> Credentials {
        Credentials {
            mechanism,
            username: "user".into(),
            password: "pencil".into(),
        }
    }

    #[test]
    fn plain_sends_one_message() {
        let mut x = creds(Mechanism::Plain).start();
        assert_eq!(x.step(b"").unwrap().unwrap(), b"\0user\0pencil");
        assert_eq!(x.step(b"").unwrap(), None);
    }

    /// RFC 7677's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn scram_sha_256_matches_the_rfc_example() {
        let mut x = Exchange {
            credentials: creds(Mechanism::ScramSha256),
            state: State::SentFirst {
                bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
                nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            },
        };
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_message = x.step(server_first).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(final_message).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            x.step(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_wrong_server_signature_or_a_huge_iteration_count_is_refused() {
        let first = |x: &mut Exchange| {
            let msg = String::from_utf8(x.step(b"").unwrap().unwrap()).unwrap();
            msg.split("r=").nth(1).unwrap().to_owned()
        };
        let mut x = creds(Mechanism::ScramSha512).start();
        let nonce = first(&mut x);
        x.step(format!("r={nonce}xyz,s=c2FsdA==,i=4096").as_bytes())
            .unwrap();
        assert!(x.step(b"v=AAAA").is_err());
        let mut x = creds(Mechanism::ScramSha256).start();
        let nonce = first(&mut x);
        assert!(
            x.step(format!("r={nonce}xyz,s=c2FsdA==,i=999999999").as_bytes())
                .is_err()
        );
        let mut x = creds(Mechanism::ScramSha256).start();
        first(&mut x);
        assert!(x.step(b"r=someone-else,s=c2FsdA==,i=4096").is_err());
    }
}
