//! The stages a frame passes through, and the one table saying which frames are read whole.
//!
//! Most frames stream through the proxy cut-through: their header is peeked, their body is
//! copied onwards as it arrives. A frame is read whole and decoded only when a stage needs it:
//!
//! | API | request read whole | response read whole | stage |
//! |-----|--------------------|---------------------|-------|
//! | ApiVersions | | always | [`crate::versions`]: narrow to what this build decodes |
//! | Metadata, FindCoordinator, DescribeCluster | | always | [`crate::rewrite`]: broker addresses |
//! | DescribeConfigs | | always | [`crate::rewrite`]: address-bearing config values |
//! | SaslHandshake, SaslAuthenticate | always | SaslAuthenticate | [`crate::sasl`]: learn the principal |
//! | Produce | when a `topics:` policy is in force | when the proxy answered some partitions itself | [`data_quality`], then [`crate::protect`] for rules with `fields:` |
//! | Fetch | | when a rule protects fields | [`reveal`] |
//!
//! The data-quality stage returns a [`ProduceAction`]: forward the request as received, forward
//! a changed request and merge the partitions it answered itself into the broker's response,
//! or answer the whole request itself. Invariants, for every stage: each request gets exactly
//! one response, responses keep request order, and a frame no stage changed is forwarded as the
//! bytes received.

pub mod data_quality;
pub mod reveal;
pub mod sequences;

use kafka_protocol::messages::{ApiKey, TopicName, produce_response::PartitionProduceResponse};

use crate::frame::Frame;

/// APIs whose requests must be at a version this build decodes, because a stage reads their
/// request or response: anything else is refused rather than forwarded unread.
pub fn version_checked(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::ApiVersions
            | ApiKey::Metadata
            | ApiKey::FindCoordinator
            | ApiKey::DescribeCluster
            | ApiKey::DescribeConfigs
            | ApiKey::DescribeQuorum
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::Produce
            | ApiKey::Fetch
            | ApiKey::ShareFetch
            | ApiKey::ShareAcknowledge
    )
}

/// Which frames are read whole, computed from the stages in force.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeTable {
    /// A `topics:` policy governs some topic: Produce requests are read and checked.
    pub produce: bool,
    /// A rule protects fields: Fetch responses are read and revealed or masked per reader.
    pub fetch: bool,
}

impl DecodeTable {
    /// Whether a request for `key` is read whole before it goes on.
    pub fn request_whole(&self, key: Option<ApiKey>) -> bool {
        match key {
            Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => true,
            Some(ApiKey::Produce) => self.produce,
            _ => false,
        }
    }
}

/// Whether a response for `api_key` is always read whole and handed to its stage.
pub fn response_whole(api_key: i16) -> bool {
    {
        matches!(
            ApiKey::try_from(api_key),
            Ok(ApiKey::ApiVersions
                | ApiKey::Metadata
                | ApiKey::FindCoordinator
                | ApiKey::DescribeCluster
                | ApiKey::DescribeConfigs
                | ApiKey::SaslAuthenticate)
        )
    }
}

/// A partition the proxy answered itself, to be merged into the broker's response.
#[derive(Debug, Clone)]
pub struct LocalPartition {
    pub topic: TopicName,
    pub response: PartitionProduceResponse,
}

/// What the data-quality stage decided for one Produce request.
#[derive(Debug)]
pub enum ProduceAction {
    /// Nothing governed or nothing to change: the request goes upstream as received.
    Forward,
    /// This request goes upstream instead; the partitions in `local` were answered here and
    /// are merged into the broker's response.
    ForwardChanged {
        request: Frame,
        local: Vec<LocalPartition>,
    },
    /// Every partition was answered here; nothing goes upstream.
    Respond(Vec<LocalPartition>),
}
