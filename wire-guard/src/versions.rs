//! ApiVersions narrowing.
//!
//! The proxy advertises only versions it can decode, so a newer broker or client never sends
//! it something it cannot read. Two further narrowings keep broker addresses from leaking:
//! Produce v10+ and Fetch v16+ responses may carry `node_endpoints` (leader hints with host and
//! port), and ShareFetch/ShareAcknowledge always may. Rewriting those would mean decoding every
//! data-path response, so those versions are not advertised instead; clients fall back to the
//! Metadata path, which is rewritten. API keys this build does not know pass through untouched:
//! their frames are forwarded as bytes and the proxy never needs to read them.

use std::{collections::HashMap, sync::Mutex};

use kafka_protocol::{
    ResponseError,
    messages::{ApiKey, ApiVersionsResponse, api_versions_response::ApiVersion},
    protocol::VersionRange,
};

/// The versions of `key` this build handles, or `None` if the key must not be advertised.
pub fn supported(key: ApiKey) -> Option<VersionRange> {
    let decodable = key.valid_versions();
    let cap = |max: i16| VersionRange {
        min: decodable.min,
        max: decodable.max.min(max),
    };
    match key {
        ApiKey::Produce => Some(cap(9)),
        ApiKey::Fetch => Some(cap(15)),
        ApiKey::ShareFetch | ApiKey::ShareAcknowledge => None,
        // v2 adds each voter's listener addresses.
        ApiKey::DescribeQuorum => Some(cap(1)),
        // Older SASL handshakes switch the connection to unframed tokens.
        ApiKey::SaslHandshake => Some(VersionRange {
            min: 1,
            max: decodable.max,
        }),
        _ => Some(decodable),
    }
}

/// The highest `transaction.version` feature level clients may be told of. Level 2 (KIP-890)
/// has clients stop sending AddPartitionsToTxn and rely on Produce v12+ to add partitions to a
/// transaction; with Produce capped at v9 their first transactional write would be refused
/// (`Partition was not added to the transaction`). At level 1 clients add partitions
/// explicitly, which works with every Produce version.
const TRANSACTION_VERSION_CAP: i16 = 1;

/// Intersects a broker's advertised versions with [`supported`], in place, and caps the
/// features whose levels assume versions the proxy does not advertise.
pub fn narrow(response: &mut ApiVersionsResponse) {
    for f in &mut response.supported_features {
        if &*f.name == "transaction.version" {
            f.min_version = f.min_version.min(TRANSACTION_VERSION_CAP);
            f.max_version = f.max_version.min(TRANSACTION_VERSION_CAP);
        }
    }
    for f in &mut response.finalized_features {
        if &*f.name == "transaction.version" {
            // Both ends: a minimum above the maximum is refused by the Java admin client.
            f.min_version_level = f.min_version_level.min(TRANSACTION_VERSION_CAP);
            f.max_version_level = f.max_version_level.min(TRANSACTION_VERSION_CAP);
        }
    }
    response.api_keys.retain_mut(|entry| {
        let Ok(key) = ApiKey::try_from(entry.api_key) else {
            return true;
        };
        let Some(ours) = supported(key) else {
            return false;
        };
        let both = ours.intersect(&VersionRange {
            min: entry.min_version,
            max: entry.max_version,
        });
        entry.min_version = both.min;
        entry.max_version = both.max;
        !both.is_empty()
    });
}

/// The versions one client connection was told it may use: its ApiVersions response after
/// narrowing. A request outside them would reach a broker that may not speak that version (the
/// intersection is narrower than either side), so it is refused rather than forwarded. Until the
/// client asks (some clients never do), only [`supported`] applies.
#[derive(Debug, Default)]
pub struct Advertised(Mutex<Option<HashMap<i16, VersionRange>>>);

impl Advertised {
    fn ranges(&self) -> std::sync::MutexGuard<'_, Option<HashMap<i16, VersionRange>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers what a narrowed ApiVersions response told the client.
    pub fn learn(&self, response: &ApiVersionsResponse) {
        let ranges = response
            .api_keys
            .iter()
            .map(|e| {
                let range = VersionRange {
                    min: e.min_version,
                    max: e.max_version,
                };
                (e.api_key, range)
            })
            .collect();
        *self.ranges() = Some(ranges);
    }

    /// Whether a request for `key` at `version` was advertised; on refusal, the range that was
    /// (none if the key was not advertised at all). ApiVersions itself is always let through:
    /// a client retries it at the version the broker names.
    pub fn check(&self, key: i16, version: i16) -> Result<(), Option<VersionRange>> {
        let ranges = self.ranges();
        let Some(ranges) = ranges.as_ref() else {
            return Ok(());
        };
        if key == ApiKey::ApiVersions as i16 {
            return Ok(());
        }
        match ranges.get(&key) {
            Some(r) if r.min <= version && version <= r.max => Ok(()),
            Some(r) => Err(Some(*r)),
            // An API this build does not know and the broker did not list: the broker answers.
            None if ApiKey::try_from(key).is_err() => Ok(()),
            None => Err(None),
        }
    }
}

/// The reply a broker gives to an ApiVersions request newer than it understands: version 0,
/// `UNSUPPORTED_VERSION`, and the ApiVersions range it does support, so the client retries.
pub fn unsupported_version_reply() -> ApiVersionsResponse {
    let range = supported(ApiKey::ApiVersions).unwrap_or(ApiKey::ApiVersions.valid_versions());
    let mut entry = ApiVersion::default();
    entry.api_key = ApiKey::ApiVersions as i16;
    entry.min_version = range.min;
    entry.max_version = range.max;
    let mut response = ApiVersionsResponse::default();
    response.error_code = ResponseError::UnsupportedVersion.code();
    response.api_keys = vec![entry];
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: i16, min: i16, max: i16) -> ApiVersion {
        let mut e = ApiVersion::default();
        e.api_key = key;
        e.min_version = min;
        e.max_version = max;
        e
    }

    #[test]
    fn narrows_to_decodable_and_drops_address_bearing_versions() {
        let mut response = ApiVersionsResponse::default();
        response.api_keys = vec![
            entry(ApiKey::Produce as i16, 0, 13),
            entry(ApiKey::Fetch as i16, 0, 18),
            entry(ApiKey::Metadata as i16, 0, 99),
            entry(ApiKey::ShareFetch as i16, 0, 1),
            entry(ApiKey::SaslHandshake as i16, 0, 1),
            entry(ApiKey::ApiVersions as i16, 0, 9),
            entry(30_000, 0, 3),
        ];
        narrow(&mut response);
        let got: Vec<_> = response
            .api_keys
            .iter()
            .map(|e| (e.api_key, e.min_version, e.max_version))
            .collect();
        assert_eq!(
            got,
            vec![
                (ApiKey::Produce as i16, 3, 9),
                (ApiKey::Fetch as i16, 4, 15),
                (ApiKey::Metadata as i16, 0, 13),
                (ApiKey::SaslHandshake as i16, 1, 1),
                (ApiKey::ApiVersions as i16, 0, 4),
                (30_000, 0, 3),
            ]
        );
    }

    #[test]
    fn requests_are_held_to_what_the_client_was_told() {
        let advertised = Advertised::default();
        assert_eq!(
            advertised.check(ApiKey::Metadata as i16, 13),
            Ok(()),
            "nothing learnt yet"
        );
        let mut response = ApiVersionsResponse::default();
        response.api_keys = vec![entry(ApiKey::Metadata as i16, 0, 12)];
        advertised.learn(&response);
        assert_eq!(advertised.check(ApiKey::Metadata as i16, 12), Ok(()));
        assert_eq!(
            advertised.check(ApiKey::Metadata as i16, 13),
            Err(Some(VersionRange { min: 0, max: 12 }))
        );
        assert_eq!(advertised.check(ApiKey::Produce as i16, 9), Err(None));
        assert_eq!(advertised.check(ApiKey::ApiVersions as i16, 9), Ok(()));
        assert_eq!(
            advertised.check(30_000, 0),
            Ok(()),
            "unknown keys pass through"
        );
    }

    #[test]
    fn transaction_version_is_capped_below_the_level_that_needs_produce_v12() {
        use kafka_protocol::{
            messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey},
            protocol::StrBytes,
        };
        let mut response = ApiVersionsResponse::default();
        for name in ["transaction.version", "group.version"] {
            let mut s = SupportedFeatureKey::default();
            s.name = StrBytes::from_static_str(name);
            s.max_version = 2;
            response.supported_features.push(s);
            let mut f = FinalizedFeatureKey::default();
            f.name = StrBytes::from_static_str(name);
            f.min_version_level = 2;
            f.max_version_level = 2;
            response.finalized_features.push(f);
        }
        narrow(&mut response);
        let finalized = &response.finalized_features;
        assert_eq!(
            (
                finalized[0].min_version_level,
                finalized[0].max_version_level
            ),
            (1, 1)
        );
        assert_eq!(response.supported_features[0].max_version, 1);
        assert_eq!(
            finalized[1].max_version_level, 2,
            "other features untouched"
        );
    }

    #[test]
    fn drops_keys_whose_ranges_do_not_meet() {
        let mut response = ApiVersionsResponse::default();
        response.api_keys = vec![entry(ApiKey::Produce as i16, 0, 2)];
        narrow(&mut response);
        assert!(response.api_keys.is_empty());
    }
}
